"""Command-line overrides that cannot be misspelt: Detectron2's ``LazyConfig.apply_overrides``
adds any key it is given, so ``train.max_iters=10`` would train with the config's max_iter,
silently. Used by ``tools/train_net.py``."""
import difflib
import inspect

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

__all__ = ["apply_known_overrides", "override_keys"]

#: Keys read with a default when a config leaves them out, so overrides may add them: by
#: Detectron2's default_setup (float32_precision: Detectron2 > 0.6) and by tools/train_net.py.
OPTIONAL_KEYS = ("train.seed", "train.cudnn_benchmark", "train.float32_precision",
                 "train.precise_bn.enabled", "train.precise_bn.num_iter")


def override_keys(cfg):
    """The dotted keys a ``key=value`` override may set: the config's own, the keyword arguments
    of each LazyCall target (their defaults may be overridden) and ``OPTIONAL_KEYS``. A target
    that takes ``**kwargs`` (or whose signature is unknown) takes any key: ``"<its key>.*"``."""
    keys = set(OPTIONAL_KEYS)

    def walk(node, prefix):
        if isinstance(node, dict):
            children = node.items()
            if "_target_" in node:
                keys.update(prefix + name for name in keyword_arguments(node["_target_"]))
        elif isinstance(node, list):
            children = enumerate(node)
        else:
            return
        for name, value in children:
            keys.add(f"{prefix}{name}")
            walk(value, f"{prefix}{name}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return keys


def keyword_arguments(target):
    """The names a LazyCall ``_target_`` (an object or its import path) accepts as keywords;
    ``["*"]`` for any."""
    try:
        parameters = inspect.signature(locate(target) if isinstance(target, str) else target)
    except (TypeError, ValueError):  # e.g. a builtin without a signature: instantiate will tell
        return ["*"]
    kinds = {p.kind for p in parameters.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return ["*"]
    return [p.name for p in parameters.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def apply_known_overrides(cfg, overrides, config_file):
    """``LazyConfig.apply_overrides``, one override at a time (one may replace a ``_target_``
    whose arguments the next sets), refusing a key the config does not have: Detectron2 would add
    it, so a misspelt key (``train.max_iters=10``) would change nothing, silently. Hydra's
    ``+key=value`` adds a key on purpose."""
    for override in overrides:
        key = override.split("=", 1)[0]
        keys = override_keys(cfg)
        known = key in keys or f"{key.rpartition('.')[0]}.*" in keys
        if not (known or key.startswith("+")):
            close = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.8)
            hint = f"did you mean {' or '.join(close)}?" if close else "no key is close."
            raise KeyError(
                f"The override {override!r} sets {key!r}, which {config_file} does not have: "
                f"{hint} Correct the key (LazyConfig.to_py(LazyConfig.load({config_file!r})) "
                "lists the config's keys), or write +key=value to add a key on purpose: a "
                "misspelt key would have changed nothing."
            )
        cfg = LazyConfig.apply_overrides(cfg, [override])
    return cfg
