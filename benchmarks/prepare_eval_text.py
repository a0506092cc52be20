"""Regenerate the bundled evaluation and calibration text from the gensim==4.4.0 wheel's enwiki dump.

The project ships the result (`flightllm_overlay/data/enwiki_eval.txt`, `enwiki_calib.txt`); this
script is how it was made, run by a maintainer with network access, never at run time:

    pip download --no-deps gensim==4.4.0 -d /tmp/g
    pip install --target /tmp/mwp mwparserfromhell==0.7.2
    PYTHONPATH=/tmp/mwp python benchmarks/prepare_eval_text.py --wheel /tmp/g/gensim-4.4.0-*.whl

Articles (namespace 0, no redirects) are stripped of wiki markup with mwparserfromhell; the first
ones in dump order (at most PER_ARTICLE characters of each) make the evaluation text, the next ones the calibration text (disjoint).
"""
from __future__ import annotations

import argparse
import bz2
import glob
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

DUMP = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
OUT = Path(__file__).resolve().parent.parent / "flightllm_overlay" / "data"
EVAL_CHARS, CALIB_CHARS = 64_000, 32_000
PER_ARTICLE = 8_000                # at most this much of one article, for variety
SKIP_SECTIONS = ("See also", "References", "Notes", "Further reading", "External links",
                 "Bibliography", "Sources", "Citations", "Footnotes")


def pages(dump_bytes: bytes):
    """(title, wikitext) of each article (namespace 0, not a redirect), in dump order."""
    root = ET.fromstring(bz2.decompress(dump_bytes))
    ns = root.tag[:root.tag.index("}") + 1]
    for page in root.iter(ns + "page"):
        if page.findtext(ns + "ns") != "0" or page.find(ns + "redirect") is not None:
            continue
        text = page.find(f"{ns}revision/{ns}text")
        if text is not None and text.text:
            yield page.findtext(ns + "title"), text.text


def plain(wikitext: str) -> str:
    """Prose paragraphs of an article: markup stripped, reference sections and stubs dropped."""
    import mwparserfromhell
    code = mwparserfromhell.parse(wikitext)
    for tag in code.filter_tags(recursive=False, matches=lambda t: str(t.tag).lower() in ("ref", "gallery", "math", "table")):
        try:
            code.remove(tag)
        except ValueError:
            pass
    for sec in code.get_sections(levels=[2]):
        heads = sec.filter_headings()
        if heads and heads[0].title.strip_code().strip() in SKIP_SECTIONS:
            code.remove(sec)
    text = code.strip_code(normalize=True, collapse=True)
    paras = []
    for line in text.splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line).replace(" ,", ",").replace(" .", ".")
        if len(line) >= 80 and not line.startswith(("Category:", "thumb|", "File:")):
            paras.append(line)
            if sum(map(len, paras)) >= PER_ARTICLE:
                break
    return "\n".join(paras)


def header(kind: str, titles: list) -> str:
    return "\n".join([
        f"# FlightLLM overlay {kind} text: plain text of English Wikipedia articles.",
        "# Source: the shortened enwiki dump in the gensim==4.4.0 wheel (" + DUMP + "),",
        "# stripped of wiki markup with mwparserfromhell by benchmarks/prepare_eval_text.py.",
        "# Licence: CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/); the authors are",
        "# the Wikipedia contributors listed in each article's history, https://en.wikipedia.org/wiki/<title>.",
        "# Articles: " + "; ".join(titles),
        "", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", default=None, help="gensim-4.4.0 wheel (default: pip download it)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    wheel = args.wheel
    if wheel is None:
        tmp = tempfile.mkdtemp()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "gensim==4.4.0",
                        "-d", tmp], check=True)
        wheel = glob.glob(f"{tmp}/gensim-4.4.0-*.whl")[0]
    with zipfile.ZipFile(wheel) as z:
        dump = z.read(DUMP)
    parts = {"eval": ([], [], EVAL_CHARS), "calib": ([], [], CALIB_CHARS)}
    order = iter(("eval", "calib"))
    kind = next(order)
    for title, wt in pages(dump):
        text = plain(wt)
        if len(text) < 2000:
            continue
        titles, texts, want = parts[kind]
        titles.append(title)
        texts.append(text)
        if sum(map(len, texts)) >= want:
            kind = next(order, None)
            if kind is None:
                break
    out = Path(args.out)
    for kind, (titles, texts, _) in parts.items():
        path = out / f"enwiki_{kind}.txt"
        path.write_text(header("evaluation" if kind == "eval" else "calibration", titles)
                        + "\n\n".join(texts) + "\n", encoding="utf-8")
        print(f"wrote {path}: {len(titles)} articles, {sum(map(len, texts))} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
