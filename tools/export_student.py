#!/usr/bin/env python
"""Cuts the student out of an MKD training checkpoint, and writes its config beside it
(``mkd.export``: the student's weights at ``--output``, its LazyConfig beside them as .yaml).

    python tools/export_student.py --config-file configs/builtin/retinanet_R50_to_R18_mkd.py \\
        --checkpoint output/.../model_final.pth --output student.pth
    python detectron2/tools/lazyconfig_train_net.py --config-file student.yaml --eval-only

Overrides ``path.key=value`` are applied to the MKD config as ``tools/train_net.py`` applies
them: a key the config does not have is refused (``+key=value`` adds one on purpose).
"""
import argparse

from mkd.export import export_student


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the MKD config of the run")
    parser.add_argument("--checkpoint", required=True, help="an MKD training checkpoint (.pth)")
    parser.add_argument("--output", required=True,
                        help="where to write the student (.pth); its config goes beside it (.yaml)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides path.key=value")
    args = parser.parse_args(argv)
    export_student(args.config_file, args.checkpoint, args.output, args.opts)


if __name__ == "__main__":
    main()
