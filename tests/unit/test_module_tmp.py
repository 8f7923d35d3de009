"""``module_tmp`` (tests/conftest.py) frees a module's folders once it passes, and keeps them
after a failure: the suite's disk use depends on it."""
import os

pytest_plugins = ["pytester"]

INNER = """
import pytest

@pytest.fixture(scope="module")
def folder(module_tmp):
    path = module_tmp("data")
    (path / "weights.pth").write_bytes(b"x" * 1000)
    return path

def test_uses(folder):
    assert (folder / "weights.pth").is_file()
    open("seen.txt", "a").write(str(folder) + "\\n")

def test_outcome(folder):
    assert {outcome}
"""
CONFTEST = "from tests.conftest import module_tmp  # noqa: F401\n"


def run(pytester, outcome):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=INNER.format(outcome=outcome))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    folder = pytester.path / "seen.txt"
    return result, folder.read_text().split()[0]


def test_module_folders_are_removed_after_the_module_passes(pytester):
    result, folder = run(pytester, "True")
    result.assert_outcomes(passed=2)
    assert not os.path.exists(folder)


def test_module_folders_are_kept_after_a_failure(pytester):
    result, folder = run(pytester, "False")
    result.assert_outcomes(passed=1, failed=1)
    assert os.path.isfile(os.path.join(folder, "weights.pth"))
