"""tools/install/install_env.sh leaves an existing stack alone, offline and in a second: it runs
against a stand-in virtual environment whose ``python`` records every pip command instead of
running it, and imports stand-ins for the packages the environment is said to hold."""
import json
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from tests.helpers import REPO

SCRIPT = REPO / "tools" / "install" / "install_env.sh"
PINS = ("numpy<1.24", "Pillow<10", "setuptools<81")

#: The stand-in ``python``: ``-m pip ...`` is recorded (with the files it reads) in $FAKE_LOG;
#: ``-c CODE`` and ``-`` run for real, but the packages listed in STUBBED import as stand-ins
#: when $FAKE_STATE lists them and fail otherwise; sys.version_info is $FAKE_PYTHON.
FAKE_PYTHON = r'''
import importlib.abc, importlib.machinery, json, os, sys, tarfile, io

STUBBED = {"torch", "torchvision", "detectron2", "mkd", "mkd_bench", "numpy", "PIL", "fvcore",
           "pycocotools",
           "tensorboard", "matplotlib", "scipy", "sklearn", "skimage", "pytest", "setuptools",
           "wheel", "ninja", "timm"}
state_file = os.environ["FAKE_STATE"]
installed = set(open(state_file).read().split())
args = sys.argv[1:]

if args[:2] == ["-m", "pip"]:
    args = [a for a in args if a not in ("--disable-pip-version-check", "-q")]
    entry = {"pip": args[2:], "FORCE_CUDA": os.environ.get("FORCE_CUDA")}
    for flag in ("-c", "-r"):
        if flag in args:
            entry[flag] = open(args[args.index(flag) + 1]).read()
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")
    if args[2] == "download":  # an sdist with what the script patches
        setup = (b'setup(ext_modules=get_extensions(),\n'
                 b'package_data={"detectron2.model_zoo": get_model_zoo_configs()})\n')
        with tarfile.open(os.path.join(args[args.index("-d") + 1], "pb1-detectron2-0.6.tar.gz"),
                          "w:gz") as tar:
            for name, data in (("setup.py", setup), ("detectron2/__init__.py", b"")):
                info = tarfile.TarInfo("pb1-detectron2-0.6/" + name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if args[2] == "install" and (args[-1].endswith("pb1-detectron2-0.6") or args[-1] == "."):
        installed.add("detectron2")
    if args[2] == "install" and "-e" in args:
        installed.update({"mkd", "mkd_bench"})
    with open(state_file, "w") as f:
        f.write(" ".join(sorted(installed)))
    sys.exit(0)


class Stand_ins(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in STUBBED:
            return None
        if name.split(".")[0] not in installed:
            # python -c puts the working directory first on sys.path: a package folder there
            # imports without an install.
            if args[0] == "-c" and os.path.isdir(name.split(".")[0]):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            raise ModuleNotFoundError(f"No module named {name!r}")
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__version__ = os.environ.get("FAKE_VERSION_" + module.__name__, "9.9")
        if module.__name__ == "torch":
            module.version = type("version", (), {"cuda": os.environ.get("FAKE_TORCH_CUDA")})
            module.cuda = type("cuda", (), {"device_count": staticmethod(
                lambda: int(os.environ.get("FAKE_TORCH_GPUS", "0")))})


sys.meta_path.insert(0, Stand_ins())
sys.version_info = tuple(int(x) for x in os.environ["FAKE_PYTHON"].split(".")) + (0, "final", 0)
code = args[1] if args[0] == "-c" else sys.stdin.read()
exec(compile(code, "<fake>", "exec"), {"__name__": "__main__"})
'''


def run_script(tmp_path, installed, python="3.11", script=SCRIPT, args=(), env=None, cwd=None,
               **versions):
    """``script`` (install_env.sh) on a stand-in venv holding ``installed``, run from ``cwd``;
    (result, pip commands)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (tmp_path / "log").unlink(missing_ok=True)
    fake = venv / "bin" / "python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_PYTHON}")
    fake.chmod(0o755)
    (tmp_path / "state").write_text(" ".join(installed))
    env = dict(env or os.environ, FAKE_LOG=str(tmp_path / "log"),
               FAKE_STATE=str(tmp_path / "state"), FAKE_PYTHON=python,
               **{f"FAKE_VERSION_{k}": v for k, v in versions.items()})
    result = subprocess.run(["bash", str(script), str(venv), *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=60)
    log = tmp_path / "log"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def mentions(calls, text):
    """Whether any pip command, or a file it reads, mentions ``text``."""
    return any(text in json.dumps(call) for call in calls)


BASE = ["torch", "torchvision", "numpy", "PIL", "fvcore", "pycocotools", "tensorboard",
        "matplotlib", "scipy", "pytest"]


def test_an_existing_detectron2_keeps_numpy_pillow_and_setuptools(tmp_path):
    # Detectron2 main with numpy 2 and Pillow 11; the tests' scikit-* missing.
    result, calls = run_script(tmp_path, BASE + ["detectron2", "mkd", "mkd_bench"],
                               detectron2="0.6+main", numpy="2.4.0", PIL="11.0.0")
    assert result.returncode == 0, result.stderr
    assert "already installed: keeping it" in result.stdout
    assert not any(mentions(calls, pin) for pin in PINS)
    assert not mentions(calls, "requirements-detectron2-0.6.txt")
    assert not mentions(calls, "pb1-detectron2")
    # One install, of the missing packages, holding the installed versions fixed.
    assert [call["pip"][0] for call in calls] == ["install"]
    (call,) = calls
    assert call["-r"] == (REPO / "tools/install/requirements.txt").read_text()
    held = call["-c"].split()
    for name in ("numpy", "Pillow", "setuptools", "torch"):
        assert f"{name}=={metadata.version(name)}" in held


def test_the_project_is_installed_though_its_folders_import_from_the_repository(tmp_path):
    """``make`` runs from the repository root, where ``python -c "import mkd"`` finds the folder
    without an install; the tools, run as scripts, would then not find the packages."""
    result, calls = run_script(tmp_path, BASE + ["sklearn", "skimage", "detectron2"], cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert [call["pip"] for call in calls] == [["install", "--no-deps", "--no-build-isolation",
                                                 "-e", str(REPO)]]


def test_a_complete_environment_is_left_untouched(tmp_path):
    result, calls = run_script(tmp_path, BASE + ["sklearn", "skimage", "detectron2", "mkd",
                                                 "mkd_bench"])
    assert result.returncode == 0, result.stderr
    assert calls == []


def test_detectron2_0_6_on_an_old_numpy_is_noted_not_changed(tmp_path):
    result, calls = run_script(tmp_path, BASE + ["sklearn", "skimage", "detectron2", "mkd",
                                                 "mkd_bench"],
                               detectron2="0.6", numpy="1.26.4", PIL="10.1.0")
    assert result.returncode == 0, result.stderr
    assert "need numpy<1.24 and Pillow<10" in result.stdout and "left as they are" in result.stdout
    assert calls == []


def test_without_detectron2_the_script_installs_0_6_with_its_pins(tmp_path):
    result, calls = run_script(tmp_path, BASE + ["sklearn", "skimage"])
    assert result.returncode == 0, result.stderr
    commands = [call["pip"] for call in calls]
    assert commands[0][:2] == ["install", "-r"] and commands[0][2].endswith(
        "requirements-detectron2-0.6.txt")
    assert all(pin in calls[0]["-r"] for pin in PINS)
    assert commands[1][0] == "download" and "pb1-detectron2==0.6" in commands[1]
    assert commands[2][0] == "install" and commands[2][-1].endswith("pb1-detectron2-0.6")
    assert commands[3][0] == "install" and "-e" in commands[3]  # the project, last
    assert len(commands) == 4


@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_python_3_12_without_detectron2_is_refused_up_front(tmp_path, python):
    result, calls = run_script(tmp_path, BASE, python=python)
    assert result.returncode != 0
    assert f"Python {python}" in result.stderr and "numpy<1.24" in result.stderr
    assert "Install Detectron2 from source" in result.stderr
    assert calls == []  # nothing installed before the refusal


def test_python_3_12_with_detectron2_installs_nothing_pinned(tmp_path):
    result, calls = run_script(tmp_path, BASE + ["sklearn", "skimage", "detectron2"],
                               python="3.12")
    assert result.returncode == 0, result.stderr
    assert [call["pip"][0] for call in calls] == ["install"] and "-e" in calls[0]["pip"]


def test_setup_cfg_finds_every_package_of_the_method_and_the_harness():
    """setup.cfg lets setuptools find the packages (``find:`` with an include list): a folder of
    modules without ``__init__.py`` would be left out of an install, and so would a package the
    include list misses; tests and configs are not packages of the install."""
    import configparser

    from setuptools import find_packages

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    include = [p.strip() for p in cfg["options.packages.find"]["include"].split(",")]
    found = set(find_packages(str(REPO), include=include))
    folders = {path.parent for top in ("mkd", "mkd_bench") for path in (REPO / top).rglob("*.py")}
    assert found == {".".join(folder.relative_to(REPO).parts) for folder in folders}
    assert {"mkd", "mkd.modeling.distillers", "mkd.engine", "mkd_bench.datasets"} <= found


# -- tools/install/install_d2main.sh -----------------------------------------------------------
D2MAIN = REPO / "tools" / "install" / "install_d2main.sh"
D2MAIN_BASE = BASE + ["setuptools", "wheel", "ninja", "sklearn", "skimage", "timm", "mkd",
                      "mkd_bench"]


def source_archive(tmp_path):
    """A stand-in Detectron2 source archive (the build itself is the stand-in pip's)."""
    import tarfile

    (tmp_path / "src" / "detectron2-main").mkdir(parents=True)
    (tmp_path / "src" / "detectron2-main" / "setup.py").write_text("")
    with tarfile.open(tmp_path / "d2.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "detectron2-main", "detectron2-main")
    return tmp_path / "d2.tar.gz"


def path_with_nvcc(tmp_path, nvcc):
    """$PATH with a stand-in nvcc first, or without any nvcc; CUDA_HOME at no toolkit."""
    bin_dir = tmp_path / "toolkit" / "bin"
    bin_dir.mkdir(parents=True)
    if nvcc:
        (bin_dir / "nvcc").write_text("#!/bin/sh\n")
        (bin_dir / "nvcc").chmod(0o755)
    directories = [d for d in os.environ["PATH"].split(os.pathsep)
                   if not os.path.exists(os.path.join(d, "nvcc"))]
    env = {k: v for k, v in os.environ.items() if k != "FORCE_CUDA"}
    return dict(env, PATH=os.pathsep.join([str(bin_dir)] + directories),
                CUDA_HOME=str(tmp_path / "no-toolkit"))


@pytest.mark.parametrize("nvcc, torch_cuda, gpus, arch_list, force, built_with", [
    (True, "13.0", 1, None, None, "1"),     # a toolkit, a CUDA torch and a GPU: CUDA ops
    (True, "13.0", 0, "9.0", None, "1"),    # no GPU, but the archs to compile for: CUDA ops
    (True, "13.0", 0, None, None, "0"),     # no GPU, no archs: torch could not compile them
    (True, "", 1, None, None, "0"),         # a CPU build of torch: CPU ops
    (False, "13.0", 1, None, None, "0"),    # no toolkit: CPU ops
    (True, "13.0", 1, None, "0", "0"),      # the caller's FORCE_CUDA is kept
])
def test_d2main_builds_cuda_ops_when_a_toolkit_is_present(tmp_path, nvcc, torch_cuda, gpus,
                                                          arch_list, force, built_with):
    env = path_with_nvcc(tmp_path, nvcc)
    env["FAKE_TORCH_CUDA"] = torch_cuda
    env["FAKE_TORCH_GPUS"] = str(gpus)
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    if arch_list is not None:
        env["TORCH_CUDA_ARCH_LIST"] = arch_list
    if force is not None:
        env["FORCE_CUDA"] = force
    result, calls = run_script(tmp_path, D2MAIN_BASE, script=D2MAIN,
                               args=[str(source_archive(tmp_path))], env=env)
    assert result.returncode == 0, result.stderr
    (build,) = [call for call in calls if call["pip"][-1] == "."]
    assert build["FORCE_CUDA"] == built_with
    assert ("CUDA ops" in result.stdout) == (built_with == "1" and force is None)
    assert ("no visible GPU: set TORCH_CUDA_ARCH_LIST" in result.stdout) == bool(
        nvcc and torch_cuda and not gpus and not arch_list and force is None)

    # The same source again: kept, not rebuilt.
    result, calls = run_script(tmp_path, D2MAIN_BASE + ["detectron2"], script=D2MAIN,
                               args=[str(tmp_path / "d2.tar.gz")], env=env)
    assert result.returncode == 0, result.stderr
    assert "already built: keeping it" in result.stdout and calls == []


def test_d2main_refuses_a_missing_archive_and_keeps_a_git_build(tmp_path):
    result, calls = run_script(tmp_path, D2MAIN_BASE, script=D2MAIN,
                               args=[str(tmp_path / "missing.tar.gz")])
    assert result.returncode == 1 and calls == []
    assert "no Detectron2 source archive at" in result.stderr
    assert "or none to build from git" in result.stderr

    # No archive: the source is the pinned commit of the git repository (not fetched here: a
    # build of that commit is already in the environment).
    commit = re.search(r"D2MAIN_COMMIT:-([0-9a-f]{40})", D2MAIN.read_text()).group(1)
    repo = "https://github.com/facebookresearch/detectron2.git"
    (tmp_path / "venv").mkdir(exist_ok=True)
    (tmp_path / "venv" / ".mkd-detectron2-main.sha256").write_text(f"git {repo} {commit}\n")
    result, calls = run_script(tmp_path, D2MAIN_BASE + ["detectron2"], script=D2MAIN)
    assert result.returncode == 0, result.stderr
    assert f"{repo} at {commit[:7]} already built: keeping it" in result.stdout
    assert calls == []
    # README and the pinned commit agree.
    assert commit[:7] in (REPO / "README.md").read_text() or commit[:7] in (
        REPO / "docs" / "install.md").read_text()
