"""Give a local job GPUs of its own: `python -m knobsweep.devices --gpus N -- CMD...`.

Snakemake's `--resources gpu=N` only counts GPUs; it does not say which job gets which device.
This claims N devices with one `flock` per device (files under KNOBSWEEP_GPU_LOCK_DIR, default
/tmp/knobsweep-gpu-locks-<uid>, shared by every workflow on the machine), sets
CUDA_VISIBLE_DEVICES to them and execs CMD, which inherits the locks: the kernel releases them
when the job's last process exits, even if it is killed. With `--resources gpu=N` a claim never
waits; without it (or with another workflow on the same machine) a job waits for free devices.

Devices: KNOBSWEEP_GPUS (ids "0,1,2" or a count), else the CUDA_VISIBLE_DEVICES Snakemake was
started with, else `nvidia-smi -L`. Inside a Slurm job the allocation already chose the devices:
the command runs unchanged.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import subprocess
import sys
import time
from pathlib import Path


def available_devices(environ: dict | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    given = env.get("KNOBSWEEP_GPUS")
    if given is None:
        given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        given = given.strip()
        if given.isdigit() and "KNOBSWEEP_GPUS" in env:
            return [str(i) for i in range(int(given))]
        return [d.strip() for d in given.split(",") if d.strip()]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def lock_dir(environ: dict | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("KNOBSWEEP_GPU_LOCK_DIR") or f"/tmp/knobsweep-gpu-locks-{os.getuid()}")


def claim(
    n: int, devices: list[str], directory: Path, timeout: float | None = None, poll: float = 0.5
) -> tuple[list[str], list[int]]:
    """Lock n of `devices` (all or nothing, so two jobs never deadlock); wait while too few are free."""
    if n > len(devices):
        raise RuntimeError(
            f"a job asks for {n} GPUs but only {len(devices)} exist here ({','.join(devices) or 'none'})"
        )
    directory.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        got: list[tuple[str, int]] = []
        for device in devices:
            fd = os.open(directory / f"gpu-{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            got.append((device, fd))
            if len(got) == n:
                return [d for d, _ in got], [fd for _, fd in got]
        for _, fd in got:
            os.close(fd)  # closing releases the lock
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no {n} free GPUs among {','.join(devices)} after {timeout} s")
        time.sleep(poll * (0.5 + random.random()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m knobsweep.devices", description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    if args.gpus > 0 and not os.environ.get("SLURM_JOB_ID"):
        devices = available_devices()
        if not devices:
            print(
                f"knobsweep.devices: the job asks for {args.gpus} GPUs but none were found "
                "(set KNOBSWEEP_GPUS or CUDA_VISIBLE_DEVICES)",
                file=sys.stderr,
            )
            sys.exit(1)
        chosen, fds = claim(args.gpus, devices, lock_dir())
        for fd in fds:
            os.set_inheritable(fd, True)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
