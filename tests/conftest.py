"""Shared fixtures: the built-in datasets on a few generated images. Shared builders live in
``tests/helpers.py``."""
import os
import shutil

import pytest
from detectron2.data import MetadataCatalog

import mkd_bench.datasets
from mkd_bench.datasets import register_builtin, shapes
from tests.helpers import REPO

# Subprocesses of the tests (tools/ scripts, DDP workers) load configs that import tests.helpers.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
# Every built-in name at its default root, as a config that reads them would register them.
mkd_bench.datasets.register_all()


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """mkd_digits_{train,val} on 8 + 4 generated images; the previous registration is restored."""
    root = str(tmp_path_factory.mktemp("mkd_digits"))
    mkd_bench.datasets.generate_dataset(root, num_train=8, num_val=4, image_size=128, workers=1)
    previous = MetadataCatalog.get("mkd_digits_train").dataset_root
    register_builtin(root)
    yield root
    register_builtin(previous)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    """mkd_shapes_{,sem_seg_}{train,val} on 6 + 3 generated images; the previous registration
    is restored."""
    root = str(tmp_path_factory.mktemp("mkd_shapes"))
    shapes.generate_dataset(root, num_train=6, num_val=3, workers=1)
    previous = MetadataCatalog.get("mkd_shapes_train").dataset_root
    register_builtin(root, dataset="shapes")
    yield root
    register_builtin(previous, dataset="shapes")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """``module_tmp(name)``: a new folder for a module-scoped fixture. The module's folders are
    removed when its tests end without a failure: training fixtures write checkpoints of about
    100 MB each, and held to the end of the suite they fill a small CI disk."""
    root = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed_before = request.session.testsfailed

    def make(name):
        path = root / name
        path.mkdir()
        return path

    yield make
    if request.session.testsfailed == failed_before:
        shutil.rmtree(root, ignore_errors=True)
