"""The writing of RESULTS.md: one named section replaced, the rest of the file left as it was.

    .venv/bin/python -m pytest benchmarks/test_results.py
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from common import RESULTS, replace_section, section_markers, write_section  # noqa: E402

DOCUMENT = """# Results

intro

<!-- a.py begin -->
old a
<!-- a.py end -->

between

<!-- b.py begin -->
old b
<!-- b.py end -->
tail
"""


def test_replaces_only_its_own_section():
    new = replace_section(DOCUMENT, "a.py", "new a\n\n| t |")
    assert new == DOCUMENT.replace("old a", "new a\n\n| t |")
    assert replace_section(new, "a.py", "old a") == DOCUMENT


def test_appends_a_missing_section():
    new = replace_section(DOCUMENT, "c.py", "c table")
    assert new.startswith(DOCUMENT.rstrip("\n"))
    assert new.endswith("\n\n<!-- c.py begin -->\nc table\n<!-- c.py end -->\n")
    assert replace_section("", "c.py", "c") == "<!-- c.py begin -->\nc\n<!-- c.py end -->\n"


@pytest.mark.parametrize("broken", [
    DOCUMENT.replace("<!-- a.py end -->", ""),                       # no end
    DOCUMENT + "<!-- a.py begin -->\n",                               # two begins
    DOCUMENT.replace("<!-- a.py begin -->", "<!-- x -->") + "<!-- a.py begin -->\n",  # end before begin
])
def test_refuses_broken_markers(broken):
    with pytest.raises(ValueError, match="a.py begin"):
        replace_section(broken, "a.py", "new")


def test_write_section_renames_a_complete_file(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOCUMENT)
    path.chmod(0o664)
    write_section(path, "b.py", "new b")
    assert path.read_text() == DOCUMENT.replace("old b", "new b")
    assert (path.stat().st_mode & 0o777) == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md"]  # no temporary file left


def test_write_section_leaves_the_file_alone_on_error(tmp_path):
    path = tmp_path / "RESULTS.md"
    broken = DOCUMENT + "<!-- a.py begin -->\n"
    path.write_text(broken)
    with pytest.raises(ValueError):
        write_section(path, "a.py", "new")
    assert path.read_text() == broken
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md"]


@pytest.mark.parametrize("script", ["ratios.py", "threads.py", "analysis.py", "inverse.py", "cuda.py", "dask_rsvd.py"])
def test_results_file_has_every_scripts_section(script):
    begin, end = section_markers(script)
    text = RESULTS.read_text()
    assert text.count(begin) == text.count(end) == 1 and text.index(begin) < text.index(end)


def test_run_header_says_where_and_with_what():
    import numpy as np
    import vsfast
    from common import cpu_model, run_header, usable_cores

    header = run_header("benchmarks/x.py --quick")
    for part in ("`benchmarks/x.py --quick`", cpu_model(), f"{usable_cores()} usable cores", "load average",
                 f"vsfast {vsfast.__version__}", f"numpy {np.__version__}", "OpenBLAS "):
        assert part in header, part
