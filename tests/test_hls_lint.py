"""The static synthesizability checker (hw/hls_lint.py): each forbidden construct is found, our kernels pass, and their synthesis branches compile."""
from __future__ import annotations

import shutil

import pytest

from flightllm_overlay.hw import hls_lint
from hls_harness import HINT, hls_include

GOOD_TOP = """
void k(unsigned* out, const uint8_t* mem, hls::stream<int>& s, unsigned n) {
#pragma HLS INTERFACE mode = s_axilite port = out bundle = control
#pragma HLS INTERFACE mode = m_axi port = mem bundle = gmem
#pragma HLS INTERFACE mode = axis port = s
#pragma HLS INTERFACE mode = s_axilite port = n bundle = control
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    unsigned t = 0;
LOOP:
    for (unsigned i = 0; i < n; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 64
        t += mem[i] + s.read();
    }
    *out = t;
}
"""

TOP = """
void k({args}) {{
{pragmas}
#pragma HLS INTERFACE mode = s_axilite port = return bundle = control
    {body}
}}
"""

CASES = {
    # rule: C++ text that breaks it
    "pointer-to-pointer": TOP.format(args="uint8_t** ports",
                                     pragmas="#pragma HLS INTERFACE mode = m_axi port = ports", body=""),
    "pointer-array": TOP.format(args="uint8_t* port[8]",
                                pragmas="#pragma HLS INTERFACE mode = m_axi port = port", body=""),
    "enum-port": "enum Mode { A, B };\n" + TOP.format(
        args="Mode mode", pragmas="#pragma HLS INTERFACE mode = s_axilite port = mode", body=""),
    "unsupported-type": "struct Ctx { int* p; };\n" + TOP.format(
        args="Ctx& ctx", pragmas="#pragma HLS INTERFACE mode = s_axilite port = ctx", body=""),
    "missing-interface": TOP.format(args="unsigned* out, unsigned n",
                                    pragmas="#pragma HLS INTERFACE mode = s_axilite port = out", body="*out = n;"),
    "stream-pointer": "struct Links { hls::stream<int>* in; };\nint f(Links& l) { return l.in->read(); }",
    "local-pointer-array": "uint8_t f(uint8_t* a, uint8_t* b, unsigned k) {\n uint8_t* ports[2] = {a, b};\n"
                           " return ports[k][0];\n}",
    "dynamic-memory-new": "int* f() { return new int[4]; }",
    "dynamic-memory-malloc": "void* f(unsigned n) { return malloc(n); }",
    "recursion": "unsigned f(unsigned n) { return n ? n * f(n - 1) : 1; }",
    "mutual-recursion": "unsigned g(unsigned n);\nunsigned f(unsigned n) { return n ? g(n - 1) : 0; }\n"
                        "unsigned g(unsigned n) { return f(n); }",
    "return-in-pipeline": "unsigned f(const int* v) {\n for (unsigned i = 0; i < 16; i++) {\n"
                          "#pragma HLS PIPELINE II = 1\n  if (v[i] < 0) return 1;\n }\n return 0;\n}",
    "loop-tripcount": "unsigned f(unsigned n) { unsigned s = 0; for (unsigned i = 0; i < n; i++) s += i; return s; }",
    "while-tripcount": "void f(hls::stream<int>& q) { while (true) { if (q.read() < 0) break; } }",
    "nonblocking-poll-empty": "void f(hls::stream<int>& q, int* o) {\n while (true) {\n"
                              "#pragma HLS LOOP_TRIPCOUNT max = 8\n  if (q.empty()) break;\n  *o += q.read();\n }\n}",
    "nonblocking-poll-condition": "void f(hls::stream<int>& q, int* o) {\n while (!q.empty()) {\n"
                                  "#pragma HLS LOOP_TRIPCOUNT max = 8\n  *o += q.read();\n }\n}",
    "nonblocking-poll-read-nb": "int f(hls::stream<int>& q) {\n int v, s = 0;\n while (true) {\n"
                                "#pragma HLS LOOP_TRIPCOUNT max = 8\n  if (!q.read_nb(v)) return s;\n  s += v;\n }\n}",
}
RULE = {"pointer-array": "pointer-to-pointer", "local-pointer-array": "pointer-array", "mutual-recursion": "recursion",
        "while-tripcount": "loop-tripcount", "dynamic-memory-new": "dynamic-memory",
        "dynamic-memory-malloc": "dynamic-memory", "nonblocking-poll-empty": "nonblocking-poll",
        "nonblocking-poll-condition": "nonblocking-poll", "nonblocking-poll-read-nb": "nonblocking-poll"}
RULE.update({name: name for name in CASES if name not in RULE})


def lint_text(tmp_path, text):
    path = tmp_path / "k.cpp"
    path.write_text(text)
    return hls_lint.lint([path])


def test_a_correct_kernel_has_no_findings(tmp_path):
    assert lint_text(tmp_path, GOOD_TOP) == []


@pytest.mark.parametrize("name", list(CASES))
def test_each_forbidden_construct_is_found(tmp_path, name):
    found = lint_text(tmp_path, CASES[name])
    want = [RULE[name]] if name != "pointer-array" else ["pointer-array", "pointer-to-pointer"]
    assert sorted(f.rule for f in found) == want, (name, [str(f) for f in found])
    assert found[0].line >= 1 and "k.cpp" in str(found[0])


def test_an_arbiter_that_keeps_polling_is_allowed(tmp_path):
    """Polling two streams and leaving only on a command is the arbiter of memctrl, not a fence
    that gives up."""
    text = ("void f(hls::stream<int>& a, hls::stream<int>& b, int* o) {\n while (true) {\n"
            "#pragma HLS LOOP_TRIPCOUNT max = 8\n  int v;\n  if (!a.read_nb(v)) {\n   if (b.read_nb(v)) *o += v;\n"
            "   continue;\n  }\n  if (v < 0) break;\n  *o += v;\n }\n}")
    assert lint_text(tmp_path, text) == []


def test_csimulation_only_code_is_not_checked(tmp_path):
    text = "#ifndef __SYNTHESIS__\nint* f() { return new int[4]; }\n#endif\n"
    assert lint_text(tmp_path, text) == []
    assert [f.rule for f in lint_text(tmp_path, text.replace("#ifndef", "#ifdef"))] == ["dynamic-memory"]


def test_our_kernels_pass(capsys):
    assert hls_lint.lint(hls_lint.default_paths()) == []
    assert hls_lint.main([]) == 0
    assert "no findings" in capsys.readouterr().err


def test_the_cli_fails_on_a_bad_file(tmp_path, capsys):
    path = tmp_path / "bad.cpp"
    path.write_text(CASES["recursion"])
    assert hls_lint.main([str(path)]) == 1
    assert "[recursion]" in capsys.readouterr().out


def test_synthesis_branches_compile(tmp_path):
    """Every kernel source parses with __SYNTHESIS__ defined (g++ -fsyntax-only, C++14), and a
    synthesis-only error is caught."""
    if shutil.which("g++") is None or not (hls_include() / "ap_int.h").is_file():
        pytest.fail(f"g++ or the HLS headers are missing: {HINT}", pytrace=False)
    assert hls_lint.syntax_check(hls_include()) == []
    bad = tmp_path / "bad.cpp"
    bad.write_text('#include "flightllm_kernels.h"\n#ifdef __SYNTHESIS__\nstatic int x = undefined_name;\n#endif\n')
    found = hls_lint.syntax_check(hls_include(), [bad])
    assert [f.rule for f in found] == ["synthesis-compile"] and "undefined_name" in found[0].message
