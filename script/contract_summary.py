"""Short summary of a schemathesis NDJSON report, for script/contract.

Groups failures by (check, problem), with the schema locations, lists the operations and response statuses
each group hit, with one example request and response, and ends with one line
`contract: N passed, N failed` counting API operations.

Usage: python3 script/contract_summary.py REPORT.ndjson
"""

import base64
import json
import re
import sys
from collections import OrderedDict


def decode(content):
    if not content:
        return ""
    if "$base64" in content:
        return base64.b64decode(content["$base64"]).decode("utf-8", "replace")
    return content.get("string", "")


def excerpt(text, limit=220):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(path):
    groups = OrderedDict()
    operations = {}  # label -> failed?
    for line in open(path, encoding="utf-8"):
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        label = recorder["label"]
        # Stateful scenarios are labelled by the link chain; count only plain operations.
        if finished.get("phase") != "stateful":
            operations.setdefault(label, False)
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                failure = check["failure_info"]["failure"]
                operation = failure.get("operation") or label
                operations[operation] = True
                message = failure.get("message", "")
                first = message.split("\n", 1)[0]
                first = re.sub(r"\(\d+ violations\)", "", first).strip()
                first = re.sub(r'^null is not of type "\w+"$', "null is not of the declared type", first)
                status = re.search(r"status code (\d+)", message)
                key = (check["name"], failure.get("title", ""), first)
                group = groups.setdefault(
                    key,
                    {"operations": OrderedDict(), "statuses": set(), "where": OrderedDict(), "example": None},
                )
                for location in re.findall(r"Schema at (\S+?):", message):
                    group["where"][location] = None
                group["operations"][operation] = None
                interaction = recorder.get("interactions", {}).get(case_id)
                if interaction and interaction.get("response"):
                    group["statuses"].add(str(interaction["response"]["status_code"]))
                elif status:
                    group["statuses"].add(status.group(1))
                if group["example"] is None and interaction:
                    request = interaction["request"]
                    response = interaction.get("response") or {}
                    group["example"] = (
                        f"{request['method']} {request['uri']}"
                        + (f" body={excerpt(decode(request.get('body')), 120)}" if request.get("body") else ""),
                        f"{response.get('status_code', '?')} {excerpt(decode(response.get('content')))}",
                    )

    print(f"contract failures, grouped ({len(groups)} distinct):")
    for n, ((check, title, first), group) in enumerate(groups.items(), 1):
        print(f"\n{n}. {check} — {title}: {first}")
        if group["where"]:
            where = list(group["where"])
            more = f", … ({len(where) - 15} more)" if len(where) > 15 else ""
            print(f"   schema locations ({len(where)}): {', '.join(where[:15])}{more}")
        print(f"   statuses: {', '.join(sorted(group['statuses'])) or '?'}")
        print(f"   operations ({len(group['operations'])}): {', '.join(group['operations'])}")
        if group["example"]:
            print(f"   e.g. request:  {group['example'][0]}")
            print(f"        response: {group['example'][1]}")
    failed = sum(operations.values())
    print(f"\ncontract: {len(operations) - failed} passed, {failed} failed")


if __name__ == "__main__":
    main(sys.argv[1])
