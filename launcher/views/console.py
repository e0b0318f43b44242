"""What a person following a run sees: the log without third-party noise. The log file keeps every line.

Dropped: torchrun's OMP banner, DeepSpeed's "Setting accelerator to CPU", Python warnings (and the source line
they quote), torchrun's own traceback when it is told to stop (SignalException) and its ChildFailedError report
after a worker failed (the trainer and the supervisor say why, once). A traceback is shown once however many
ranks print it.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

_NOISE = re.compile(
    r"torch/distributed/run\.py:\d+\] (\**|Setting OMP_NUM_THREADS .*)$"
    r"|Setting accelerator to CPU"
    r"|\w*Warning: ")
_TRACEBACK = "Traceback (most recent call last):"
_TORCHRUN_NOISE = ("SignalException", "ChildFailedError")
_REPORT_RULE = re.compile(r"^=+$")


def for_console(lines: Iterable[str]) -> Iterator[str]:
    """`lines` (each ending in a newline, as read from the log) less the noise."""
    shown_errors: set[str] = set()
    block: list[str] = []
    quoted_source = False  # the line after a warning quotes the source line that warned
    report_rules = 0  # torchrun's failure report sits between two rules of '='
    for line in lines:
        text = line.rstrip("\n")
        if block:  # inside a traceback: it ends at its first unindented line (the exception)
            block.append(line)
            if text and not text.startswith((" ", "\t")):
                yield from _traceback(block, shown_errors)
                report_rules = 2 if "ChildFailedError" in text else 0
                block = []
        elif report_rules:
            report_rules -= bool(_REPORT_RULE.match(text))
        elif text.endswith(_TRACEBACK):
            block = [line]
        elif quoted_source and text.startswith((" ", "\t")):
            quoted_source = False
        elif _NOISE.search(text):
            quoted_source = "Warning: " in text
        else:
            quoted_source = False
            yield line
    yield from block


def _traceback(block: list[str], shown_errors: set[str]) -> Iterator[str]:
    error = block[-1].strip()
    if any(noise in error for noise in _TORCHRUN_NOISE) or error in shown_errors:
        return
    shown_errors.add(error)
    yield from block
