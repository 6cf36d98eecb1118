"""Vet a candidate policy in a separate process before a node touches it.

A policy file is untrusted input: ONNX Runtime may take gigabytes for a big file, a Loop may never
end, a graph may answer NaN or take longer than a control period. Any of that inside the policy
node would hold its GIL, its memory or its loader thread. So the node hands the file's bytes to
this module run as a child process (stdin; ordinary scheduling, niced) and loads them only after
the verdict says yes. The child runs under an address-space limit (RLIMIT_AS) and the parent
kills it after a wall-clock limit, counted from when the child has its imports done (a loaded
machine may take seconds).

It checks, in order: the ONNX parses and keeps no tensor in external files (the node loads bytes,
not a directory); the droil metadata matches the running robot spec; the session builds within
one control period of CPU time, or MIN_BUILD_BUDGET above 200 Hz (the node builds it again,
holding its GIL for parts of it, so a longer build would stall the loop); the p99 of
single-observation inference over a test batch spanning the spec's observation ranges, in thread
CPU time (what the policy costs, not what a loaded machine adds), is within ``max_fraction`` of
the control period (a slow policy is refused after its second slow run); and every action of
that batch is finite.
"""

from __future__ import annotations

import json
import math
import os
import resource
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from droil_ros.robots.spec import RobotSpec, load_spec

# the child's working directory, which ``-m`` puts first on sys.path: the directory this package
# was imported from, so the child runs this code, not a droil_ros in the node's working directory
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# s of CPU a session build may take even where the control period is shorter: any session costs
# 1-2 ms here, so above 200 Hz a swap may delay a tick by up to this (see the node's _load)
MIN_BUILD_BUDGET = 0.005
# The child drops the real-time scheduling it inherits from a SCHED_FIFO loader before it imports
# anything (a hanging policy at real-time priority would starve every ordinary thread, DDS's too)
# and runs niced, below the node's ordinary threads.
CHILD = ("import os, runpy; os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0)); os.nice(10); "
         "runpy.run_module('droil_ros.policy.vetting', run_name='__main__', alter_sys=True)")
READY = b"ready\n"  # the child's first line once its imports are done and it reads the policy
STARTUP_TIMEOUT = 60.0  # s the child may take to import numpy, onnx and ONNX Runtime
TIMED_RUNS = 100  # single-observation inferences timed (p99 over these)
# bytes of address space the child may add to what its imports took (ORT needs a few times the
# model's size while it builds a session)
MEMORY_HEADROOM = 512 * 2**20
MODEL_MEMORY_FACTOR = 8


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    policy_id: str = ""
    inference_p99_us: float = math.nan
    build_ms: float = math.nan


def memory_limit(max_bytes: int) -> int:
    """Address space the vetting child may add for a file of at most ``max_bytes``."""
    return MEMORY_HEADROOM + MODEL_MEMORY_FACTOR * max_bytes


class Vetter:
    """Runs the vetting child, one at a time; ``cancel`` kills a running one (node shutdown)."""

    def __init__(self, spec: RobotSpec, period: float, max_fraction: float, timeout: float, memory: int):
        self.spec, self.period, self.max_fraction = spec, period, max_fraction
        self.timeout, self.memory = timeout, memory
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def __call__(self, data: bytes, label: str) -> Verdict:
        command = [sys.executable, "-c", CHILD, str(self.spec.source.resolve()),
                   self.spec.hash, repr(self.period), repr(self.max_fraction), str(self.memory), label]
        try:
            with self.lock:
                self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, cwd=PACKAGE_ROOT)
            first = _first_line(self.proc, STARTUP_TIMEOUT)
            if first == READY:  # the limit counts from here: slow imports are not the policy's doing
                out, err = self.proc.communicate(data, timeout=self.timeout)
            else:  # a verdict without reading the policy (or nothing: the child failed to start)
                out, err = self.proc.communicate(timeout=STARTUP_TIMEOUT)
                out = first + out
        except subprocess.TimeoutExpired:
            self.cancel()
            return Verdict(False, f"{label}: vetting did not finish within {self.timeout:g} s "
                                  f"(inference or session build hangs or is far too slow)")
        except OSError as exc:
            return Verdict(False, f"cannot start the vetting process: {exc}")
        finally:
            with self.lock:
                code, self.proc = (self.proc.wait() if self.proc is not None else None), None
        try:
            return Verdict(**json.loads(out.decode().splitlines()[-1]))
        except (ValueError, IndexError, TypeError):
            last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            return Verdict(False, f"{label}: vetting process failed ({how}; over the memory limit of "
                                  f"{self.memory / 2**20:.0f} MiB?) {last[0][:200]}".rstrip())

    def cancel(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()


def _first_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """The child's first stdout line, newline included (b'' at EOF); TimeoutExpired after
    ``timeout`` s. Read from the descriptor: nothing may stay in a buffer communicate() skips."""
    line, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if not selector.select(max(deadline - time.monotonic(), 0.0)):
                raise subprocess.TimeoutExpired(proc.args, timeout)
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    return line


def observation_batch(spec: RobotSpec, rng: np.random.Generator) -> np.ndarray:
    """Observations across the spec's plausible ranges: zeros, both bounds, each element at its
    bounds with the rest at zero, and random draws at scales from 1 to the bounds."""
    low, high = spec.obs_low, spec.obs_high
    rows = [np.zeros_like(low), low, high]
    for k in range(spec.obs_dim):
        for bound in (low, high):
            row = np.zeros_like(low)
            row[k] = bound[k]
            rows.append(row)
    for scale in (1.0, 10.0, 1e3, math.inf):
        size = (8, len(low))
        draw = rng.uniform(low, high, size) if scale == math.inf else rng.normal(scale=scale, size=size)
        rows.extend(np.clip(draw, low, high))
    return np.array(rows, dtype=np.float32)


def _external_tensors(graph) -> list[str]:
    """Names of tensors stored outside the model (in this graph and its subgraphs)."""
    from onnx import AttributeProto, TensorProto

    found = [t.name for t in graph.initializer if t.data_location == TensorProto.EXTERNAL]
    found += [t.values.name for t in graph.sparse_initializer
              if t.values.data_location == TensorProto.EXTERNAL]
    for node in graph.node:
        for attr in node.attribute:
            tensors = [attr.t] if attr.type == AttributeProto.TENSOR else list(attr.tensors)
            found += [t.name for t in tensors if t.data_location == TensorProto.EXTERNAL]
            for sub in ([attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)):
                found += _external_tensors(sub)
    return found


def vet(data: bytes, spec: RobotSpec, period: float, max_fraction: float, label: str) -> Verdict:
    """The checks, in this process (the child's work; see the module docstring)."""
    import onnx
    import onnxruntime as ort

    from droil_ros.policy.runtime import OnnxPolicy, PolicyError, _session_options

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        return Verdict(False, f"{label}: not a valid ONNX model ({type(exc).__name__})")
    external = _external_tensors(model.graph)
    if external:
        return Verdict(False, f"{label}: tensors in external files ({', '.join(external[:3])}): "
                              f"a policy must be one self-contained file")
    del model
    # ORT's first session in a process sets up its environment: not the candidate's cost
    warm = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "warm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=9)
    ort.InferenceSession(warm.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"])
    started = time.thread_time()
    try:
        policy = OnnxPolicy(label, spec, data=data)
    except PolicyError as exc:
        return Verdict(False, str(exc))
    build = time.thread_time() - started
    budget = max(period, MIN_BUILD_BUDGET)
    if build > budget:
        return Verdict(False, f"{label}: building the session takes {build * 1e3:.1f} ms of CPU, more than "
                              f"the {budget * 1e3:.1f} ms the node's loop may wait for it",
                       policy.policy_id, build_ms=build * 1e3)
    batch = observation_batch(spec, np.random.default_rng(0))
    limit = max_fraction * period
    times, outputs = [], []
    try:
        for obs in batch[np.arange(max(TIMED_RUNS, len(batch))) % len(batch)]:
            started = time.thread_time()
            outputs.append(policy.raw(obs))
            times.append(time.thread_time() - started)
            if sum(t > limit for t in times) > TIMED_RUNS // 100:  # the p99 is over already: stop here
                break
        else:
            outputs.append(policy.raw(batch))
    except Exception as exc:  # ORT's runtime errors have their own types
        reason = f"{label}: inference fails on the test batch ({type(exc).__name__}: {exc})"
        return Verdict(False, reason[:300], policy.policy_id, build_ms=build * 1e3)
    p99 = float(np.percentile(times, 99)) if len(times) >= TIMED_RUNS else max(times)
    verdict = dict(policy_id=policy.policy_id, inference_p99_us=p99 * 1e6, build_ms=build * 1e3)
    if p99 > limit:
        return Verdict(False, f"{label}: inference p99 {p99 * 1e3:.2f} ms (CPU) exceeds {max_fraction:g} of "
                              f"the control period ({limit * 1e3:.2f} ms)", **verdict)
    outputs = np.concatenate(outputs)
    if not np.all(np.isfinite(outputs)):
        bad = int(np.sum(~np.all(np.isfinite(outputs), axis=1)))
        return Verdict(False, f"{label}: NaN or Inf actions for {bad} of {len(outputs)} test observations",
                       **verdict)
    return Verdict(True, **verdict)


def _limit_memory(extra: int) -> None:
    """Cap the address space at what is mapped now plus ``extra`` (imports are already in)."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = mapped + extra if hard == resource.RLIM_INFINITY else min(mapped + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def main(argv: list[str]) -> int:
    """``spec_path spec_hash period max_fraction memory label``, model bytes on stdin, one JSON
    verdict line on stdout."""
    import onnx  # noqa: F401  (imported before the memory cap and the time limit)
    import onnxruntime  # noqa: F401

    import droil_ros.policy.runtime  # noqa: F401

    spec_path, spec_hash, period, max_fraction, memory, label = argv
    spec = load_spec(spec_path)
    if spec.hash != spec_hash:
        verdict = Verdict(False, f"robot spec {spec_path} changed since the node started")
    else:
        _limit_memory(int(memory))
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()
        data = sys.stdin.buffer.read()
        try:
            verdict = vet(data, spec, float(period), float(max_fraction), label)
        except MemoryError:
            verdict = Verdict(False, f"{label}: vetting ran out of its memory limit "
                                     f"({int(memory) / 2**20:.0f} MiB)")
        except Exception as exc:  # anything else the file provokes is a rejection too
            verdict = Verdict(False, f"{label}: vetting failed ({type(exc).__name__}: {exc})"[:300])
    print(json.dumps(asdict(verdict)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
