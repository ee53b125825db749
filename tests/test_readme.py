"""The README's examples run top to bottom on an empty database and answer what it shows.

Every `$ curl ...` line in a fenced block of README.md is replayed in order, through bash (so
`$(date ...)` works) and the real curl, against one launcher serving a fresh database, with
`localhost:8080` pointed at its port and `SEGSVC_PUBLIC_URL=http://localhost:8080` (as the report
links example says). The lines after a command, up to a blank line or the next `$`, are its
answer; for an `-i` example the status line and headers come first, then a blank line, then the
body. Compared: the status line, every header the README shows (others, such as `Date`, are not
looked at), and the body: JSON as parsed (same keys at every depth, same values), anything else
(CSV) line by line. Before comparing, both sides have every RFC 3339 time and every date replaced
by one placeholder and every request id (32 hex digits) by another, as the README says those
differ from run to run; segment ids, event ids, counts and everything else must be equal.

A GET whose answer does not match yet is asked again for up to RETRY_SECONDS: a few examples show
the state a background job leaves "a moment later" (a rollout converged, a TTL of 1 s run out).

Skipped by rule:
- `$` lines that are not curl (`docker compose`), and blocks without a `$` line: configuration,
  log lines, the Prometheus configuration, shell snippets;
- every example of the "Deployment" section: they go through nginx in front of the service;
- an answer the README shortens (one holding ` ... `).
"""

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving import Launcher

README = Path(__file__).resolve().parent.parent / "README.md"
SHOWN_ADDRESS = "localhost:8080"
RETRY_SECONDS = 15
SKIPPED_SECTIONS = {"Deployment"}
TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))?")
REQUEST_ID = re.compile(r"\b[0-9a-f]{32}\b")


@dataclass(frozen=True)
class Example:
    line: int
    section: str
    command: str
    answer: tuple[str, ...]

    @property
    def replayed(self) -> bool:
        return (
            self.command.startswith("curl ")
            and self.section not in SKIPPED_SECTIONS
            and not any(" ... " in line for line in self.answer)
        )

    @property
    def is_read(self) -> bool:
        return " -X " not in self.command and " -d " not in self.command


def readme_examples(text: str) -> list[Example]:
    """Every `$` line of a fenced block, with its answer and the `##` section it is in."""
    lines = text.splitlines()
    examples, section, in_block, index = [], "", False, 0

    def answer_lines() -> list[str]:
        nonlocal index
        taken = []
        while index < len(lines) and lines[index] and not lines[index].startswith(("$ ", "```")):
            taken.append(lines[index])
            index += 1
        return taken

    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            in_block = not in_block
        elif not in_block and line.startswith("## "):
            section = line.removeprefix("## ")
        if not (in_block and line.startswith("$ ")):
            index += 1
            continue
        start, command = index, line.removeprefix("$ ")
        while command.endswith("\\"):
            index += 1
            command = command.removesuffix("\\") + lines[index].strip()
        index += 1
        answer = answer_lines()
        if answer and answer[0].startswith("HTTP/") and index + 1 < len(lines) and not lines[index]:
            index += 1
            body = answer_lines()
            answer += ["", *body] if body else []
        examples.append(Example(start + 1, section, command, tuple(answer)))
    return examples


def normalised(text: str) -> str:
    return REQUEST_ID.sub("<request-id>", TIME.sub("<time>", text))


def split_answer(lines: list[str]) -> tuple[list[str], str]:
    """(status line and headers, body) of an answer; no header lines when it shows none."""
    if not lines or not lines[0].startswith("HTTP/"):
        return [], "\n".join(lines)
    if "" not in lines:
        return lines, ""
    blank = lines.index("")
    return lines[:blank], "\n".join(lines[blank + 1 :])


def body_differs(expected: str, actual: str) -> bool:
    expected, actual = normalised(expected).strip(), normalised(actual).strip()
    try:
        return json.loads(expected) != json.loads(actual)
    except json.JSONDecodeError:
        return expected.splitlines() != actual.splitlines()


def differences(example: Example, output: str) -> list[str]:
    expected_head, expected_body = split_answer(list(example.answer))
    actual_head, actual_body = split_answer(output.replace("\r\n", "\n").split("\n"))
    found = []
    if expected_head:
        if not actual_head or normalised(actual_head[0]) != normalised(expected_head[0]):
            found.append(f"status line {actual_head[:1]}")
        headers = {}
        for header in actual_head[1:]:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = normalised(value.strip())
        for header in expected_head[1:]:
            name, _, value = header.partition(":")
            if headers.get(name.strip().lower()) != normalised(value.strip()):
                found.append(f"header {header!r}")
    if body_differs(expected_body, actual_body):
        found.append("body")
    return found


def run(example: Example, port: int) -> str:
    command = example.command.replace(SHOWN_ADDRESS, f"127.0.0.1:{port}")
    environ = {**os.environ, "no_proxy": "*", "NO_PROXY": "*"}
    completed = subprocess.run(
        ["bash", "-c", command], capture_output=True, env=environ, timeout=30, check=False
    )
    return completed.stdout.decode()


def test_the_quickstart_is_in_the_first_30_lines():
    head = "\n".join(README.read_text().splitlines()[:30])
    assert "make run" in head
    assert "make test" in head
    assert len([e for e in readme_examples(head) if e.command.startswith("curl ")]) >= 3


def test_the_parser_sees_every_example_the_rule_skips_none_other():
    examples = readme_examples(README.read_text())
    skipped = [example for example in examples if not example.replayed]
    assert len(examples) - len(skipped) > 40
    for example in skipped:
        assert (
            not example.command.startswith("curl ")
            or example.section in SKIPPED_SECTIONS
            or any(" ... " in line for line in example.answer)
        )


def test_every_readme_example_answers_as_shown_on_an_empty_database(
    start_launcher: Callable[..., Launcher], database_url_for_test: str
):
    launcher = start_launcher(
        DATABASE_URL=database_url_for_test, SEGSVC_PUBLIC_URL="http://localhost:8080"
    )
    launcher.wait_until_healthy()
    for example in filter(lambda example: example.replayed, readme_examples(README.read_text())):
        output = run(example, launcher.port)
        deadline = time.monotonic() + RETRY_SECONDS
        while example.is_read and differences(example, output) and time.monotonic() < deadline:
            time.sleep(0.2)
            output = run(example, launcher.port)
        assert not differences(example, output), (
            f"README.md line {example.line}: {example.command}\n"
            f"differs in {differences(example, output)}\n"
            f"shown:\n" + "\n".join(example.answer) + f"\n\nanswered:\n{output}"
        )
