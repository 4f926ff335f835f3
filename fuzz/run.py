"""Run fuzz targets for a while: ``python -m fuzz.run TARGET|all --seconds N``.

With atheris installed (``pip install '.[fuzz]'``) the run is coverage-guided:
libFuzzer starts from the committed corpus (``fuzz/corpus/TARGET``, read
only) and keeps what it finds in a scratch folder (``--work``, a temporary
one by default). Without atheris, or with ``--engine hypothesis``, the
target is fed the corpus mutated by hypothesis, in rounds, until the time is
up (no coverage feedback: a smoke run, not a fuzzer).

A finding stops the run with exit status 1 and leaves the input that made it
in ``--artifacts`` (default ``fuzz/findings/``, not committed): reproduce it
with ``python -m fuzz.run TARGET --replay FILE``. ``all`` runs every target in
turn, each in its own process, for ``--seconds`` each, and fails if any did.
Known findings (:data:`fuzz.common.KNOWN`) do not stop a run; ``--strict``
makes them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from fuzz.targets import TARGETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the largest input libFuzzer makes (a TLS hello can be 16 KiB + headers)
MAX_LEN = {"tls_client_hello": 17000, "tls_server_hello": 17000, "proxy_parse": 4200,
           "site_ini": 8192}


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris(target: str, seconds: int, work: str, artifacts: str, extra: list[str]) -> None:
    """Never returns: libFuzzer exits when done (0) or on a finding (non-zero)."""
    import atheris

    from fuzz.corpus_io import corpus_dir
    with atheris.instrument_imports(include=["lbframe", "fuzz"]):
        from fuzz.corpus_io import target_function
        function = target_function(target)
    os.makedirs(artifacts, exist_ok=True)
    args = [sys.argv[0], work, corpus_dir(target), f"-max_total_time={seconds}",
            f"-max_len={MAX_LEN.get(target, 4096)}", "-timeout=10", "-rss_limit_mb=2048",
            f"-artifact_prefix={os.path.join(artifacts, target)}-", "-print_final_stats=1",
            *extra]
    atheris.Setup(args, function)
    atheris.Fuzz()


def run_hypothesis(target: str, seconds: int, artifacts: str) -> int:
    from hypothesis import HealthCheck, given, settings

    from fuzz.corpus_io import corpus, inputs, target_function
    function = target_function(target)
    seeds = [data for _, data in corpus(target)]
    for data in seeds:
        function(data)
    deadline = time.monotonic() + seconds
    rounds = 0
    found = []

    @settings(max_examples=500, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(inputs(seeds))
    def one_round(data):
        try:
            function(data)
        except BaseException:
            found.append(data)
            raise

    while time.monotonic() < deadline:
        rounds += 1
        try:
            one_round()
        except Exception:
            os.makedirs(artifacts, exist_ok=True)
            path = os.path.join(artifacts, f"{target}-hypothesis-{int(time.time())}")
            with open(path, "wb") as f:
                f.write(found[-1])
            print(f"{target}: finding; input written to {path}", file=sys.stderr)
            raise
    print(f"{target}: {rounds} rounds of 500 inputs, no finding")
    return 0


def replay(target: str, path: str) -> None:
    from fuzz import common
    from fuzz.corpus_io import target_function
    with open(path, "rb") as f:
        data = f.read()
    with common.strict():
        target_function(target)(data)
    print(f"{target}: {path}: no finding")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    p.add_argument("target", choices=[*TARGETS, "all"])
    p.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    p.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    p.add_argument("--work", help="libFuzzer's corpus folder (default: a temporary one)")
    p.add_argument("--artifacts", default=os.path.join(ROOT, "fuzz", "findings"))
    p.add_argument("--strict", action="store_true", help="known findings stop the run too")
    p.add_argument("--replay", metavar="FILE", help="run one input and show any finding")
    args, extra = p.parse_known_args(argv)
    if args.strict:
        from fuzz import common
        common.KNOWN.clear()
    if args.replay:
        replay(args.target, args.replay)
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "hypothesis"
    if args.target == "all":
        failed = []
        for target in TARGETS:
            command = [sys.executable, "-m", "fuzz.run", target, "--seconds", str(args.seconds),
                       "--engine", engine, "--artifacts", args.artifacts,
                       *(["--strict"] if args.strict else []), *extra]
            print(f"== {target} ({engine}, {args.seconds} s)", flush=True)
            if subprocess.call(command, cwd=ROOT) != 0:
                failed.append(target)
        print(f"fuzz: {len(TARGETS) - len(failed)} targets clean"
              + (f", findings in: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    if engine == "hypothesis":
        return run_hypothesis(args.target, args.seconds, args.artifacts)
    if args.work:
        os.makedirs(args.work, exist_ok=True)
        run_atheris(args.target, args.seconds, args.work, args.artifacts, extra)
    # libFuzzer ends the process itself: run it in a child, and clean up after it here
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{args.target}-") as scratch:
        return subprocess.call([sys.executable, "-m", "fuzz.run", *(sys.argv[1:] if argv is None
                                                        else argv), "--work", scratch], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
