"""Shared fixtures: tools/train_net.py as a module, and the built-in dataset on a few images."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser

import mkd_bench.datasets

REPO = Path(__file__).resolve().parents[1]


def load_tool(name):
    """A script of tools/ as a module (tools/ is not a package; as for a script run from the
    command line, its directory is on ``sys.path`` for its imports)."""
    if str(REPO / "tools") not in sys.path:
        sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = load_tool("train_net")

#: Overrides that make any built-in config train for 3 quick iterations.
QUICK = ["train.max_iter=3", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0"]


def read_tree(root):
    """{relative path: bytes} of every file under root (to compare generated datasets)."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def train_net_setup(config, output_dir, overrides, resume=False, eval_only=False):
    """(args, cfg) as tools/train_net.py builds them from its command line."""
    argv = ["--config-file", str(config)] + ["--resume"] * resume + ["--eval-only"] * eval_only
    argv += [f"train.output_dir={output_dir}", *QUICK, *overrides]
    args = default_argument_parser().parse_args(argv)
    return args, train_net.setup(args)


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """mkd_digits_{train,val} on 8 + 4 generated images; the previous registration is restored."""
    root = str(tmp_path_factory.mktemp("mkd_digits"))
    mkd_bench.datasets.generate_dataset(root, num_train=8, num_val=4, image_size=128, workers=1)
    previous = MetadataCatalog.get("mkd_digits_train").dataset_root
    mkd_bench.datasets.register_builtin(root)
    yield root
    mkd_bench.datasets.register_builtin(previous)
