"""Static synthesizability checks of the HLS kernels (UG1399 2023.1 rules that need no Vitis), and their CLI.

    python -m flightllm_overlay.hw.hls_lint [FILE ...]          # default: our kernel sources
    python -m flightllm_overlay.hw.hls_lint --compile           # also g++ -fsyntax-only -D__SYNTHESIS__

Rules, each a `Finding` with the file, line and the fix:

- top-level arguments (a function with ``#pragma HLS INTERFACE ... port = return``): no pointer to
  a pointer (``T**``, an array of pointers), no enum, only supported types (integer and float
  scalars, ``ap_[u]int<N>``, pointers to those, ``hls::stream`` references), and an INTERFACE
  pragma for every one;
- no dynamic memory (``new``, ``delete``, ``malloc``/``calloc``/``realloc``/``free``);
- no recursion (a cycle in the call graph of the functions the sources define);
- every loop has a trip count: a ``for`` bounded by a constant (a literal or an UPPER_CASE
  name), or a ``LOOP_TRIPCOUNT``/``UNROLL`` pragma in its body;
- no stream read in a non-blocking poll loop: a loop that leaves (``break``/``return``) when
  ``empty()`` is true or ``read_nb`` finds nothing, or whose condition polls (a poll loop that
  serves other work and leaves only on a command, the arbiter of memctrl, is allowed);
- streams only by reference: no pointer to an ``hls::stream`` (in a struct, an array or an
  argument), which HLS cannot map to a FIFO interface;
- no array of pointers (e.g. m_axi pointers picked by a run-time index): each pointer is its own
  argument, chosen by a ``switch`` (one explicit path per bundle);
- no ``return`` inside a loop with ``#pragma HLS PIPELINE`` (an early exit breaks the pipeline:
  latch the error in a flag and report it after the loop).

Code under ``#ifndef __SYNTHESIS__`` is skipped (C simulation only).  What this does not prove:
that Vitis HLS accepts the kernels, meets timing, fits the U280, or schedules the loops at the
initiation intervals the pragmas ask for; see docs/u280_build.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .vitis import KERNEL_FILES

SRC = Path(__file__).resolve().parents[1] / "src"
#: Kernel sources: what v++ -c compiles (testbenches and the C-simulation shims are not synthesised).
KERNEL_SOURCES = tuple(dict.fromkeys(f for files in KERNEL_FILES.values() for f in files))
KERNEL_HEADERS = ("flightllm_kernels.h", "flightllm_decode.h", "flightllm_fp.h", "flightllm_hw.h",
                  "memctrl.h")

_SCALARS = {"bool", "char", "signed char", "unsigned char", "short", "unsigned short", "int",
            "unsigned", "unsigned int", "long", "unsigned long", "long long", "unsigned long long",
            "float", "double", "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t",
            "int64_t", "uint64_t", "word_t"}
_STREAMS = re.compile(r"^(hls::stream<.*>|fllm_link_t)$")
_AP = re.compile(r"^ap_u?int<\s*\d+\s*>$")
_STREAM_POINTER = re.compile(r"\b(hls::stream\s*<[^;{}()]*?>|fllm_link_t)\s*\*")
_POINTER_ARRAY = re.compile(r"\b[A-Za-z_][\w:<>]*\s*\*\s*(?:const\s+)?([A-Za-z_]\w*)\s*\[")
_DYNAMIC = re.compile(r"\bnew\b|\bdelete\b|\b(malloc|calloc|realloc|free)\s*\(")
_KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "static_assert", "catch"}


@dataclass(frozen=True)
class Finding:
    """One rule broken at one place."""

    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


# ---------------------------------------------------------------------------------------------
# Source text: comments and strings blanked (line numbers kept), C-simulation blocks dropped
# ---------------------------------------------------------------------------------------------
def _blank(match: re.Match) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def clean(text: str) -> str:
    """The code as synthesis sees it: comments/strings blanked, ``#ifndef __SYNTHESIS__`` (and the
    ``#else`` of ``#ifdef __SYNTHESIS__``) parts blanked; newlines kept for line numbers."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", _blank, text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\\n])*"', lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', text)
    out, stack = [], []              # stack: per open #if, is the current branch dropped?
    for line in text.split("\n"):
        s = line.strip()
        if re.match(r"#\s*if", s):
            drop = bool(re.match(r"#\s*ifndef\s+__SYNTHESIS__\b", s)) or bool(
                re.match(r"#\s*if\s+!\s*defined\s*\(\s*__SYNTHESIS__\s*\)\s*$", s))
            stack.append(("syn" if drop or "__SYNTHESIS__" in s else "other", drop))
            out.append("")
            continue
        if re.match(r"#\s*else", s) and stack:
            kind, drop = stack[-1]
            stack[-1] = (kind, (not drop) if kind == "syn" else drop)
            out.append("")
            continue
        if re.match(r"#\s*endif", s) and stack:
            stack.pop()
            out.append("")
            continue
        out.append("" if any(d for _, d in stack) else line)
    return "\n".join(out)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _match_paren(text: str, start: int, open_ch="(", close_ch=")") -> int:
    """Index just past the bracket that closes the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _statement_end(text: str, start: int) -> int:
    """End of the statement or block starting at `start` (after whitespace)."""
    i = start
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i < len(text) and text[i] == "{":
        return _match_paren(text, i, "{", "}")
    if re.match(r"(for|while|if)\b", text[i:]):
        head = text.index("(", i)
        end = _statement_end(text, _match_paren(text, head))
        if text.startswith("if", i):
            rest = re.match(r"\s*else\b", text[end:])
            if rest:
                return _statement_end(text, end + rest.end())
        return end
    depth = 0
    for j in range(i, len(text)):
        if text[j] in "({[":
            depth += 1
        elif text[j] in ")}]":
            depth -= 1
        elif text[j] == ";" and depth <= 0:
            return j + 1
    return len(text)


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------
_FUNC = re.compile(r"(?:^|\n)[ \t]*(?:(?:static|inline|constexpr)\s+)*[\w:<>,\s\*&]+?[\s\*&]"
                   r"(?P<name>[A-Za-z_]\w*)\s*\((?P<args>[^;{}]*?)\)\s*(?:const\s*)?\{")


@dataclass
class Function:
    name: str
    args: str
    body: str
    body_start: int
    line: int


def functions(text: str) -> list:
    out = []
    for m in _FUNC.finditer(text):
        if m.group("name") in _KEYWORDS:
            continue
        brace = m.end() - 1
        end = _match_paren(text, brace, "{", "}")
        out.append(Function(m.group("name"), m.group("args"), text[brace:end], brace,
                            _line_of(text, m.start("name"))))
    return out


def _split_args(args: str) -> list:
    parts, depth, cur = [], 0, ""
    for ch in args:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [" ".join(p.split()) for p in parts]


def _arg_type(arg: str) -> tuple:
    """(type text without const, pointer depth, is reference, is array, name)."""
    arg = re.sub(r"\s*\[[^\]]*\]", "[]", arg)
    array = arg.endswith("[]")
    arg = arg.removesuffix("[]")
    m = re.match(r"^(.*?)([A-Za-z_]\w*)$", arg)
    typ, name = (m.group(1), m.group(2)) if m else (arg, "?")
    depth, ref = typ.count("*"), "&" in typ
    typ = re.sub(r"\bconst\b|\bvolatile\b|[\*&]", " ", typ)
    return " ".join(typ.split()), depth, ref, array, name


def check_top(fn: Function, enums: set, path: str, text: str) -> list:
    """The top-level argument rules of one kernel function."""
    found = []
    pragmas = re.findall(r"#pragma\s+HLS\s+INTERFACE\b[^\n]*\bport\s*=\s*(\w+)", fn.body)
    line = fn.line
    for arg in _split_args(fn.args):
        typ, depth, ref, array, name = _arg_type(arg)
        where = f"argument `{name}` of top-level function {fn.name}"
        if depth + (1 if array else 0) >= 2:
            found.append(Finding(path, line, "pointer-to-pointer",
                                 f"{where} is a pointer to a pointer ({arg}): not synthesizable at the "
                                 f"top level; pass each pointer as its own argument (one m_axi bundle each)"))
            continue
        if typ.startswith("enum ") or typ in enums:
            found.append(Finding(path, line, "enum-port",
                                 f"{where} has enum type {typ}: enums are not supported on the "
                                 f"interface; use an unsigned s_axilite scalar"))
            continue
        scalar = typ in _SCALARS or bool(_AP.match(typ))
        stream = bool(_STREAMS.match(typ)) and ref and not depth
        if not (stream or (scalar and not ref)):
            found.append(Finding(path, line, "unsupported-type",
                                 f"{where} has type `{arg}`: a top-level argument must be a scalar, a "
                                 f"pointer to scalars (m_axi or s_axilite), or an hls::stream reference "
                                 f"(axis)"))
            continue
        if name not in pragmas:
            found.append(Finding(path, line, "missing-interface",
                                 f"{where} has no `#pragma HLS INTERFACE ... port = {name}`: say which "
                                 f"adapter (s_axilite, m_axi bundle, axis) it gets"))
    return found


def _loops(text: str):
    for m in re.finditer(r"\b(for|while)\s*\(", text):
        head_end = _match_paren(text, m.end() - 1)
        header = text[m.end():head_end - 1]
        body_end = _statement_end(text, head_end)
        yield m, header, text[head_end:body_end], head_end


def _bounded_for(header: str) -> bool:
    parts = header.split(";")
    if len(parts) != 3:
        return False
    for conj in re.split(r"&&", parts[1]):
        if re.fullmatch(r"\s*\w+\s*(<|<=)\s*(\d+[uUlL]*|[A-Z_][A-Z0-9_]*(\s*[-+*/]\s*(\d+|[A-Z_][A-Z0-9_]*))*)\s*",
                        conj):
            return True
    return False


def _own_body(body: str) -> str:
    """The loop body without its nested loops (pragmas of an inner loop are the inner loop's)."""
    out, i = [], 0
    for m in re.finditer(r"\b(for|while)\s*\(", body):
        if m.start() < i:
            continue
        out.append(body[i:m.start()])
        i = _statement_end(body, _match_paren(body, m.end() - 1))
    out.append(body[i:])
    return "".join(out)


def check_loops(text: str, path: str) -> list:
    found = []
    for m, header, body, _ in _loops(text):
        own = _own_body(body)
        line = _line_of(text, m.start())
        pragma = re.search(r"#pragma\s+HLS\s+(LOOP_TRIPCOUNT|UNROLL)\b", own)
        if not pragma and not (m.group(1) == "for" and _bounded_for(header)):
            found.append(Finding(path, line, "loop-tripcount",
                                 f"`{m.group(1)} ({' '.join(header.split())})` has no constant bound and "
                                 f"no `#pragma HLS LOOP_TRIPCOUNT max = N`: the scheduler cannot report "
                                 f"its latency"))
        if re.search(r"#pragma\s+HLS\s+PIPELINE\b", own) and re.search(r"\breturn\b|\bFLLM_FAIL\s*\(", own):
            found.append(Finding(path, line, "return-in-pipeline",
                                 f"`{m.group(1)} ({' '.join(header.split())})` is pipelined and returns from "
                                 f"inside: latch the error in a flag and return after the loop"))
        polls = re.search(r"\.empty\s*\(|\bread_nb\s*\(", header)
        if polls:
            found.append(Finding(path, line, "nonblocking-poll",
                                 f"the loop condition polls a stream ({' '.join(header.split())}): it ends "
                                 f"as soon as the stream is momentarily empty; block on read() instead"))
            continue
        for cond in re.finditer(r"\bif\s*\(", own):
            c_end = _match_paren(own, cond.end() - 1)
            c_text = own[cond.end():c_end - 1]
            gives_up = re.search(r"\.empty\s*\(\s*\)", c_text) and "!" not in c_text.split(".empty")[0][-3:] \
                or re.search(r"!\s*[\w\.\->\[\]]*read_nb\s*\(", c_text)
            if not gives_up:
                continue
            stmt = own[c_end:_statement_end(own, c_end)]
            if re.search(r"\b(break|return)\b", stmt):
                found.append(Finding(path, _line_of(text, m.start()), "nonblocking-poll",
                                     f"the loop leaves when a non-blocking poll finds nothing "
                                     f"(if ({' '.join(c_text.split())}) ... break/return): a unit that "
                                     f"is momentarily idle stops; block on read(), or keep polling"))
    return found


def check_stream_pointers(text: str, path: str) -> list:
    return [Finding(path, _line_of(text, m.start()), "stream-pointer",
                    f"`{m.group(0)}`: a pointer to a stream; pass hls::stream by reference "
                    f"(fllm_link_t&), one explicit argument per link") for m in _STREAM_POINTER.finditer(text)]


def check_pointer_arrays(text: str, path: str) -> list:
    return [Finding(path, _line_of(text, m.start()), "pointer-array",
                    f"`{' '.join(m.group(0).split())}...]`: an array of pointers (a run-time choice among "
                    f"m_axi bundles or memories); pass each pointer as its own argument and pick one "
                    f"with a switch") for m in _POINTER_ARRAY.finditer(text)]


def check_dynamic(text: str, path: str) -> list:
    return [Finding(path, _line_of(text, m.start()), "dynamic-memory",
                    f"`{m.group(0).strip('( ')}`: no dynamic memory in synthesised code; use a "
                    f"fixed-size array") for m in _DYNAMIC.finditer(text)]


def check_recursion(defs: dict, path_of: dict) -> list:
    """defs: name -> Function over all files; a cycle in the call graph is recursion."""
    calls = {name: {c for c in re.findall(r"\b([A-Za-z_]\w*)\s*\(", fn.body[1:])
                    if c in defs} for name, fn in defs.items()}
    found, done = [], set()

    def visit(name, trail):
        if name in trail:
            cycle = trail[trail.index(name):] + [name]
            fn = defs[cycle[0]]
            found.append(Finding(path_of[cycle[0]], fn.line, "recursion",
                                 f"recursion {' -> '.join(cycle)}: not synthesizable; rewrite as a loop "
                                 f"with an explicit stack of fixed size"))
            return
        if name in done:
            return
        for callee in sorted(calls[name]):
            visit(callee, trail + [name])
        done.add(name)

    for name in sorted(defs):
        visit(name, [])
    return found


def lint(paths) -> list:
    """Every finding in the given source files (headers are read for enums and helpers)."""
    found, defs, path_of, enums = [], {}, {}, set()
    texts = {}
    for p in paths:
        texts[str(p)] = clean(Path(p).read_text())
    for text in texts.values():
        enums |= set(re.findall(r"\benum\s+(?:class\s+)?([A-Za-z_]\w*)", text))
    for path, text in texts.items():
        found += check_dynamic(text, path)
        found += check_stream_pointers(text, path)
        found += check_pointer_arrays(text, path)
        found += check_loops(text, path)
        for fn in functions(text):
            if fn.name in defs:
                continue
            defs[fn.name], path_of[fn.name] = fn, path
            if re.search(r"#pragma\s+HLS\s+INTERFACE\b[^\n]*\bport\s*=\s*return\b", fn.body):
                found += check_top(fn, enums, path, text)
    found += check_recursion(defs, path_of)
    return found


def default_paths() -> list:
    return [SRC / f for f in KERNEL_SOURCES + KERNEL_HEADERS]


# ---------------------------------------------------------------------------------------------
# The __SYNTHESIS__ syntax check
# ---------------------------------------------------------------------------------------------
def compile_command(source: Path, include: Path) -> list:
    """g++ -fsyntax-only of one kernel source in its synthesis branch (C++14, as Vitis HLS)."""
    return ["g++", "-fsyntax-only", "-std=c++14", "-D__SYNTHESIS__", "-Wall", "-Werror",
            "-Wno-unknown-pragmas", "-Wno-unused-label", f"-I{SRC}", "-isystem", str(SRC / "synth_shim"),
            "-isystem", str(include), str(source)]


def syntax_check(include: Path, sources=None) -> list:
    """Findings (one per source that does not compile) of the synthesis-branch compile."""
    sources = list(sources or [SRC / name for name in KERNEL_SOURCES])

    def one(source):
        return subprocess.run(compile_command(Path(source), include), capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:
        procs = list(pool.map(one, sources))
    found = []
    for source, proc in zip(sources, procs):
        if proc.returncode:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr[:300])
            found.append(Finding(str(source), 0, "synthesis-compile", first))
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flightllm_overlay.hw.hls_lint",
                                 description="Static synthesizability checks of the HLS kernels.")
    ap.add_argument("files", nargs="*", help="sources to check (default: the kernel sources)")
    ap.add_argument("--compile", action="store_true",
                    help="also compile each kernel source with __SYNTHESIS__ defined (g++ -fsyntax-only)")
    ap.add_argument("--include", default=str(SRC.parents[1] / ".venv" / "hls_include"),
                    help="folder of the open-source ap_int.h / hls_stream.h")
    args = ap.parse_args(argv)
    found = lint(args.files or default_paths())
    if args.compile:
        if shutil.which("g++") is None:
            print("hls_lint: g++ not found; install it (apt-get install g++) for --compile", file=sys.stderr)
            return 2
        found += syntax_check(Path(args.include), args.files or None)
    for f in found:
        print(f)
    print(f"hls_lint: {len(found)} finding(s)" if found else "hls_lint: no findings", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
