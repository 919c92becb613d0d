#!/usr/bin/env python
"""Submit ``train_net.py`` to SLURM through submitit, requeued on preemption and time-out.

    python tools/submit.py --config-file CFG --nodes 2 --gpus-per-node 8 --partition P \\
        --time 72:00:00 [train_net.py flags] [key=value overrides]

One task per GPU (``--gpus-per-node 0``: one CPU task per node). The config and its overrides
are checked before anything is submitted; errors are one line. What happens on a signal:
:mod:`fpt.engine.slurm`; see the README's "SLURM" section.
"""

import argparse
import os

# as train_net.py (see there): the job inherits this environment (sbatch --export=ALL)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# flags of train_net.py that SLURM's layout decides
_LAYOUT_FLAGS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, without the usage text
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser():
    parser = _Parser(
        prog="submit.py",
        description="Submit train_net.py as a SLURM job (submitit); other flags and key=value "
        "overrides go to train_net.py",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--nodes", type=int, default=1, metavar="N")
    parser.add_argument(
        "--gpus-per-node",
        type=int,
        default=1,
        metavar="G",
        help="one task per GPU; 0: one task per node, on CPU (default 1)",
    )
    parser.add_argument("--partition", metavar="P")
    parser.add_argument(
        "--time",
        default="60",
        metavar="T",
        help="time limit: MINUTES, HH:MM:SS or D-HH:MM:SS (default 60 minutes)",
    )
    parser.add_argument("--cpus-per-task", type=int, metavar="C")
    parser.add_argument("--mem", metavar="M", help="memory per node, as sbatch's --mem (64G)")
    parser.add_argument(
        "--output-dir",
        metavar="D",
        help="submitit's folder: the sbatch script, the pickled job, the tasks' logs (default: "
        "<the config's output dir>/slurm)",
    )
    parser.add_argument("--job-name", metavar="NAME", help="default: the config file's name")
    parser.add_argument(
        "--signal-delay",
        type=int,
        default=90,
        metavar="S",
        help="checkpoint and requeue S seconds before the time limit (default 90)",
    )
    parser.add_argument(
        "--max-requeues",
        type=int,
        default=3,
        metavar="K",
        help="requeues after reaching the time limit (preemptions do not count; default 3)",
    )
    return parser


def main(argv=None):
    import fpt  # noqa: F401  (adapts detectron2 to the current stack; registers datasets)
    from fpt.engine import default_argument_parser
    from fpt.engine.main import USER_ERRORS, prepare_config
    from fpt.engine.slurm import SubmitError, parse_minutes, submit

    parser = _parser()
    ns, train_rest = parser.parse_known_args(argv)
    for flag in _LAYOUT_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in train_rest):
            parser.error(f"{flag} is set by SLURM's layout: use --nodes and --gpus-per-node")
    if ns.nodes < 1 or ns.gpus_per_node < 0:
        parser.error(f"--nodes {ns.nodes} --gpus-per-node {ns.gpus_per_node}: need N >= 1, G >= 0")
    try:
        minutes = parse_minutes(ns.time)
    except ValueError as e:
        parser.error(f"--time: {e}")
    train_argv = ["--config-file", ns.config_file, *train_rest]
    train_parser = default_argument_parser()
    train_parser.error = parser.error
    train_args = train_parser.parse_args(train_argv)
    try:
        config, _ = prepare_config(train_args)  # what train_net.py checks before it starts
        folder = os.path.abspath(ns.output_dir or os.path.join(config.output_dir, "slurm"))
        job_name = ns.job_name or os.path.splitext(os.path.basename(ns.config_file))[0]
        job = submit(
            train_argv,
            folder,
            nodes=ns.nodes,
            gpus_per_node=ns.gpus_per_node,
            minutes=minutes,
            partition=ns.partition,
            cpus_per_task=ns.cpus_per_task,
            mem=ns.mem,
            job_name=job_name,
            signal_delay_s=ns.signal_delay,
            max_requeues=ns.max_requeues,
        )
    except (SubmitError, *USER_ERRORS) as e:
        parser.exit(1, f"{parser.prog}: error: {str(e).strip().splitlines()[-1]}\n")
    tasks = ns.nodes * max(ns.gpus_per_node, 1)
    print(
        f"Submitted job {job.job_id}: {tasks} task{'s' if tasks > 1 else ''} on {ns.nodes} "
        f"node{'s' if ns.nodes > 1 else ''}, training into {config.output_dir}; logs: "
        f"{job.paths.stdout.parent}"
    )
    return job


if __name__ == "__main__":
    main()
