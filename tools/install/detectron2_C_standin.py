"""Stand-in for ``detectron2._C`` in a pure-Python Detectron2 install.

Detectron2's PyPI source distribution lacks its C++ sources, so its compiled module cannot be
built. ``detectron2.layers`` and ``detectron2.evaluation`` import ``_C`` at import time, so this
module lets them import; only the few ops that truly need the compiled code (rotated boxes,
deformable convolution, the fast COCO evaluator) fail, and they fail with a message that says
what to do. MKD itself never calls any of them. Installed by ``tools/install/install_env.sh``.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def _missing(*args, **kwargs):
        raise NotImplementedError(
            f"detectron2._C.{name} is a compiled op, and this Detectron2 was installed without "
            "its C++ extension. Build Detectron2 from source for rotated boxes, deformable "
            "convolution or the fast COCO evaluator; COCOEvaluator works with use_fast_impl=False."
        )

    return _missing


def get_compiler_version():
    return "none (pure-Python install)"


def get_cuda_version():
    return "none (pure-Python install)"


def has_cuda():
    return False
