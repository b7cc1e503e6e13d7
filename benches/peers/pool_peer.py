"""The in-process pool (the `replpool` Python package) for the benchmark: times warm trivial
executions in a session of a `replpool.Pool`, end to end as a Python caller sees them (the call,
the GIL released while waiting, the reply built as an `Execution`).

    python pool_peer.py exec N      ->  {"samples_s": [...]} on stdout
"""

import json
import sys
import time

import replpool


def execute(n):
    with replpool.Pool(warm_workers=1) as pool, pool.session() as session:
        for _ in range(20):  # warm-up, as the server's own workload does
            session.execute("1+1")
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            reply = session.execute("1+1")
            samples.append(time.perf_counter() - started)
            if reply.text != "2":
                raise RuntimeError(f"unexpected reply: {reply}")
        return {"samples_s": samples}


def main(argv):
    if argv[:1] != ["exec"] or len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(execute(int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
