#!/usr/bin/env python3
"""Control calls and report checking for scripts/autobahn.sh (Autobahn|Testsuite fuzzingserver mode).

    autobahn_ctl.py case-count BASE_URL            print the number of cases the server will run
    autobahn_ctl.py update-reports BASE_URL AGENT  make the server write its reports for AGENT
    autobahn_ctl.py check INDEX_JSON AGENT EXPECTED_COUNT
                                                   summarise the report; exit 1 unless every case's behavior and
                                                   behaviorClose is OK or INFORMATIONAL and all cases are there

The control calls use the venv's websockets client; the cases themselves are run by the client under test.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import sys
from urllib.parse import quote

from websockets.asyncio.client import connect

PASSING = {"OK", "INFORMATIONAL"}


async def first_text(url: str) -> str:
    async with connect(url, open_timeout=20, close_timeout=5, ping_interval=None, compression=None) as ws:
        message = await asyncio.wait_for(ws.recv(), 20)
        return message if isinstance(message, str) else message.decode()


async def until_closed(url: str) -> None:
    async with connect(url, open_timeout=20, close_timeout=60, ping_interval=None, compression=None) as ws:
        # the server writes the reports, then closes
        try:
            await asyncio.wait_for(ws.wait_closed(), 600)
        except asyncio.TimeoutError:
            raise SystemExit("autobahn: updateReports did not finish within 600 s")


def check(index_path: str, agent: str, expected: int) -> int:
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError) as error:
        print(f"autobahn: FAILED: cannot read report {index_path}: {error}")
        return 1
    results = index.get(agent)
    if results is None:
        print(f"autobahn: FAILED: no results for agent {agent!r} in {index_path} (agents: {', '.join(index) or 'none'})")
        return 1

    def case_key(case_id: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", case_id))

    behaviors = collections.Counter(r.get("behavior", "?") for r in results.values())
    closes = collections.Counter(r.get("behaviorClose", "?") for r in results.values())
    names = sorted(set(behaviors) | set(closes))
    print(f"autobahn: {len(results)} cases for agent {agent}")
    print(f"  {'result':<15}{'behavior':>10}{'close':>10}")
    for name in names:
        print(f"  {name:<15}{behaviors.get(name, 0):>10}{closes.get(name, 0):>10}")

    failing = []
    for case_id in sorted(results, key=case_key):
        r = results[case_id]
        if r.get("behavior") not in PASSING or r.get("behaviorClose") not in PASSING:
            description = ""
            report = os.path.join(os.path.dirname(index_path), r.get("reportfile", ""))
            try:
                with open(report, encoding="utf-8") as f:
                    data = json.load(f)
                description = re.sub(r"<[^>]+>", "", data.get("description", "")).replace("\n", " ")
                result_text = data.get("result", "")
                if result_text:
                    description = f"{description} | result: {result_text}"
            except (OSError, ValueError):
                pass
            if len(description) > 200:
                description = description[:197] + "..."
            failing.append(f"  {case_id:<10} behavior={r.get('behavior')} close={r.get('behaviorClose')}"
                           f" closeCode={r.get('remoteCloseCode')}  {description}")
    if failing:
        print(f"autobahn: {len(failing)} failing cases:")
        print("\n".join(failing))
    missing = expected - len(results)
    if missing > 0:
        print(f"autobahn: {missing} of {expected} cases have no result (the client never completed them)")
    ok = not failing and missing <= 0
    print(f"autobahn: {'PASSED' if ok else 'FAILED'}: {len(results) - len(failing)} of {expected} cases OK/INFORMATIONAL")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "case-count":
        print(int(asyncio.run(first_text(f"{argv[1]}/getCaseCount"))))
        return 0
    if len(argv) >= 3 and argv[0] == "update-reports":
        asyncio.run(until_closed(f"{argv[1]}/updateReports?agent={quote(argv[2])}"))
        return 0
    if len(argv) >= 4 and argv[0] == "check":
        return check(argv[1], argv[2], int(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
