"""``cyclestyle train``: train (or resume) a CycleGAN on two image folders."""

import argparse

from cyclestyle.commands import EPILOG_OVERRIDES, add_config_args


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="train a CycleGAN on two image folders", epilog=EPILOG_OVERRIDES,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p)
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the run's newest checkpoint ('latest'; starts fresh if there is none) "
                        "or from a checkpoint folder")
    p.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                   help="save a checkpoint and stop at step N (for time-limited jobs; resume later)")


def run(args: argparse.Namespace) -> int:
    from cyclestyle.config import load_config
    from cyclestyle.training import EXIT_PREEMPTED, train

    result = train(load_config(args.config, args.overrides), resume=args.resume, stop_at_step=args.stop_at_step)
    if result.step and result.checkpoint is not None:
        print(f"cyclestyle: step {result.step}: checkpoint {result.checkpoint}, generators {result.generators_file}")
    return EXIT_PREEMPTED if result.preempted else 0
