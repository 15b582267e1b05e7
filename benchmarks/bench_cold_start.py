"""Cold start: whole commands, process start to file written, against a bare ``import torch`` process.

Rows, each a fresh process, run in alternating order every round:

* ``python -c "import torch"`` -- the reference every ratio divides by;
* ``from diffusers import DiffusionPipeline, ModelMixin`` -- the floor of any command that loads a
  pipeline (the pipeline and models subclass them; diffusers imports torch._dynamo, transformers
  and its autoencoders with them);
* ``vmas-diffusion generate <bundled demo clip> -o out.mp4`` (bundled vmas-tiny AR model);
* ``vmas-diffusion demo -o out.mp4`` (the same, plus the music-beat analysis and the alignment plot).

Per row: CPU time of the child (user + sys, from ``os.wait4``: what the process did, whatever else
the machine runs) and wall time, median and min-max over the rounds, and the median of the
per-round ratios to the bare torch process with their range. Then the load time of each bundled
pipeline (``VideoToMusicPipeline.from_pretrained``) in a fresh process whose imports are done
(first load, and a second one), against the 0.5 s goal.

    python benchmarks/bench_cold_start.py             # 5 rounds
    python benchmarks/bench_cold_start.py --rounds 3

Children run with ``OMP_NUM_THREADS=1`` (``--threads`` changes it), offline, progress bars on stderr discarded.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD_SCRIPT = """
import json, time
t0 = time.process_time()
from vmas_diffusion.pipelines import VideoToMusicPipeline
imported = time.process_time() - t0
out = {"import_cpu_s": imported}
for name in ("vmas-tiny-ar", "vmas-tiny-ldm"):
    times = []
    for _ in range(2):
        t = time.process_time()
        VideoToMusicPipeline.from_pretrained(name)
        times.append(time.process_time() - t)
    out[name] = times
print(json.dumps(out))
"""


def run(argv, env) -> tuple:
    """(CPU seconds, wall seconds) of one child process, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall, out


def spread(values) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children (default 1)")
    args = parser.parse_args()

    from vmas_diffusion.defaults import DEMO_VIDEO

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    py = sys.executable
    cli = [py, "-m", "vmas_diffusion.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "python -c 'import torch'": [py, "-c", "import torch"],
            "import diffusers' DiffusionPipeline": [py, "-c", "from diffusers import DiffusionPipeline, ModelMixin"],
            "vmas-diffusion generate (demo clip, .mp4)": cli + ["generate", str(DEMO_VIDEO), "-o", f"{tmp}/gen.mp4"],
            "vmas-diffusion demo": cli + ["demo", "-o", f"{tmp}/demo.mp4"],
        }
        outputs = {"vmas-diffusion generate (demo clip, .mp4)": f"{tmp}/gen.mp4", "vmas-diffusion demo": f"{tmp}/demo.mp4"}
        load = os.getloadavg()
        print(f"{args.rounds} rounds, children with OMP_NUM_THREADS={args.threads}; "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (before)")  # fmt: skip
        names = list(commands)
        cpu = {n: [] for n in names}
        wall = {n: [] for n in names}
        run(commands[names[0]], env)  # warm the page cache once
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                for path in outputs.values():
                    Path(path).unlink(missing_ok=True)
                c, w, _ = run(commands[name], env)
                if name in outputs and not Path(outputs[name]).is_file():
                    raise SystemExit(f"{name} wrote no file")
                cpu[name].append(c)
                wall[name].append(w)
        ref = names[0]
        print(f"\n{'command':<44} {'CPU s (min-max)':>20} {'x torch CPU':>22} {'wall s (min-max)':>20} {'x torch wall':>22}")
        for name in names:
            r_cpu = [a / b for a, b in zip(cpu[name], cpu[ref])]
            r_wall = [a / b for a, b in zip(wall[name], wall[ref])]
            print(f"{name:<44} {spread(cpu[name]):>20} {spread(r_cpu):>22} {spread(wall[name]):>20} {spread(r_wall):>22}")

        _, _, out = run([py, "-c", LOAD_SCRIPT], env)
        loads = json.loads(out.decode().strip().splitlines()[-1])
        print(f"\npipeline load (fresh process, after importing the pipeline module: {loads['import_cpu_s']:.2f} CPU s)")
        for name in ("vmas-tiny-ar", "vmas-tiny-ldm"):
            first, again = loads[name]
            print(f"  {name:<14} first {first:.3f} CPU s, again {again:.3f} CPU s (goal <= 0.5 s)")
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after); goal: demo <= 2x the bare torch process")


if __name__ == "__main__":
    main()
