"""What `launch` shows of a run's log: the lines a person needs, without third-party banners, torchrun's own
tracebacks and reports, and with a traceback every rank printed shown once. Inputs are torchrun/DeepSpeed output
as it appears in a local run's log."""

from __future__ import annotations

from launcher.views.console import for_console

GRACEFUL_STOP = """\
W1126 23:08:36.255000 515 torch/distributed/run.py:874] 
W1126 23:08:36.255000 515 torch/distributed/run.py:874] *****************************************
W1126 23:08:36.255000 515 torch/distributed/run.py:874] Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid your system being overloaded, please further tune the variable for optimal performance in your application as needed. 
W1126 23:08:36.255000 515 torch/distributed/run.py:874] *****************************************
[2026-11-26 23:08:37,799] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.
/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py:83: FutureWarning: `torch.distributed.all_gather_into_tensor` is deprecated
  return func(*args, **kwargs)
W1126 23:09:00.136000 515 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 520 closing signal SIGTERM
[rank 0] 2026-11-26 23:09:00,251 spottrain: preemption notice: checkpointed step 116, waiting for the upload
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 6, in <module>
    sys.exit(main())
  File "/venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessing/api.py", line 86, in _terminate_process_handler
    raise SignalException(f"Process {os.getpid()} got signal: {sigval}", sigval=sigval)
torch.distributed.elastic.multiprocessing.api.SignalException: Process 515 got signal: 15
[supervisor] attempt 1: steps 0→116, exit code 75
"""

CRASH = """\
[rank 0] 2026-11-26 23:10:00,001 spottrain: resumed run r at step 4 from runs/store
Traceback (most recent call last):
  File "/work/src/spottrain/trainer.py", line 90, in _train
    metrics = _train_step(engine, task, sampler.micro_batches(position.step))
KeyError: 'input_ids'
Traceback (most recent call last):
  File "/work/src/spottrain/trainer.py", line 90, in _train
    metrics = _train_step(engine, task, sampler.micro_batches(position.step))
KeyError: 'input_ids'
E1126 23:10:01.000000 600 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: 1) local_rank: 0 (pid: 601) of binary: /venv/bin/python
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 6, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: 
============================================================
spottrain FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 601)
============================================================
[supervisor] attempt 1: steps 4→4, exit code 1
"""


def shown(text: str) -> list[str]:
    return [line.rstrip("\n") for line in for_console(text.splitlines(keepends=True))]


def test_a_graceful_stop_shows_no_torchrun_traceback_and_no_banners():
    assert shown(GRACEFUL_STOP) == [
        "W1126 23:09:00.136000 515 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 520 "
        "closing signal SIGTERM",
        "[rank 0] 2026-11-26 23:09:00,251 spottrain: preemption notice: checkpointed step 116, waiting for the upload",
        "[supervisor] attempt 1: steps 0→116, exit code 75",
    ]


def test_a_crash_shows_the_ranks_traceback_once_and_not_torchruns_report():
    lines = shown(CRASH)
    assert lines.count("Traceback (most recent call last):") == 1
    assert lines.count("KeyError: 'input_ids'") == 1
    assert not any("ChildFailedError" in line or "Root Cause" in line or line.startswith("====") for line in lines)
    assert lines[-1] == "[supervisor] attempt 1: steps 4→4, exit code 1"


def test_different_errors_of_different_ranks_are_each_shown():
    text = CRASH.replace("KeyError: 'input_ids'", "RuntimeError: rank 1 ran out of memory", 1)
    lines = shown(text)
    assert "RuntimeError: rank 1 ran out of memory" in lines and "KeyError: 'input_ids'" in lines


def test_a_log_cut_inside_a_traceback_still_shows_what_there_is():
    assert shown("step 1\nTraceback (most recent call last):\n  File \"x.py\", line 1\n") == [
        "step 1", "Traceback (most recent call last):", '  File "x.py", line 1']
