"""A short analysis in a warm session: load a CSV, summarise it, plot it, save the plot.

    python analysis.py [sales.csv] [revenue.png]

Runs in-process with `replpool.Pool`; pass `--server URL` to run the same cells on a replpool
server with `replpool.Client` instead.
"""

import argparse
from pathlib import Path

import replpool

HERE = Path(__file__).resolve().parent

CELLS = {
    "load": "sales = pd.read_csv('sales.csv', parse_dates=['date'])\nsales['revenue'] = sales.units * sales.price\nlen(sales)",
    "summary": "sales.groupby('region').revenue.agg(['sum', 'mean']).round(1)",
    "plot": (
        "daily = sales.pivot_table(index='date', columns='region', values='revenue', aggfunc='sum')\n"
        "ax = daily.plot(figsize=(8, 4), title='Revenue per day and region')\n"
        "ax.set_ylabel('revenue')\n"
        "plt.tight_layout()"
    ),
}


def analyse(session: replpool.Session, csv: Path, png: Path) -> None:
    session.upload("sales.csv", csv.read_bytes())
    for name, code in CELLS.items():
        reply = session.execute(code)
        if not reply.ok:
            raise SystemExit(f"{name} failed: {reply.error['ename']}: {reply.error['evalue']}")
        if reply.text:
            print(f"{name}:\n{reply.text}\n")
        for image in reply.images():
            png.write_bytes(image)
            print(f"{name}: wrote {png} ({len(image)} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=HERE / "sales.csv")
    parser.add_argument("png", nargs="?", type=Path, default=Path("revenue.png"))
    parser.add_argument("--server", help="a replpool server's URL (default: an in-process pool)")
    args = parser.parse_args()
    if args.server:
        with replpool.Client(args.server).session() as session:
            analyse(session, args.csv, args.png)
    else:
        with replpool.Pool(warm_workers=1) as pool, pool.session() as session:
            analyse(session, args.csv, args.png)


if __name__ == "__main__":
    main()
