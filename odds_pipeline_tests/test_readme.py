"""The README's feature store example runs as written and says what it promises."""

import re
import subprocess
import sys

from .conftest import REPO_ROOT


def test_readme_feature_store_example_runs_as_written(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(block)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    ).stdout
    lines = out.splitlines()
    assert lines[1].split()[-1] == "0.52", out  # asked on Jan 15: the Jan 1 value, never Feb 1's
    assert lines[2].split()[-1] == "0.61", out
