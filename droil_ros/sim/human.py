"""A simulated human demonstrator for the wheel balancing robot: a person with a joystick that
commands the wheel torque directly, mediocre on purpose (seed 002: "human demonstrations can only
be perceived as mediocre or suboptimal data").

What a person adds to a good feedback law, each a parameter of ``HumanParams``:
- perception: the state seen ``delay_steps`` control steps late, tilt seen with noise;
- policy: the LQR gain detuned (``gain``), weak position feedback (``x_gain``: small drifts),
  and inconsistent (the gain wanders, log-normal, correlated over ``gain_tau``);
- intermittency: near upright (perceived tilt under ``threshold``) the stick is only moved every
  ``refresh`` seconds; short lapses (``lapse_rate`` per second, ``lapse_seconds`` long) hold it;
- motor: Ornstein-Uhlenbeck remnant (``ou_sigma`` of the torque limit, ``ou_tau``) plus noise
  proportional to the command (``signal_noise``);
- joystick: read at ``joystick_hz`` (zero-order hold between reads), dead zone, 8-bit quantisation.

Calibrated to OUR plant, not to human physiology: the sim robot (centre of mass 0.19 m above the
axle) tolerates about 3 control steps (15 ms) of delay and a 50 Hz hold, so a person's real
150-250 ms reaction could not balance it. Delays and lapses are therefore in control steps and
tens of milliseconds, scaled so that 30 s sessions from near upright score below the LQR without
falls: standing about 75-90 % of its return, driving (speed error weighs 5x) about 30-70 %
(docs/results/human_demonstrator/). Each demonstrator's parameters are drawn from
``DEMONSTRATOR_RANGES`` around the nominal values (``draw_params``). The audit's probe
(research/audit-2026-12-07.md §3: delay 2, 50 Hz, 8 bits, 5 % dead zone, OU 0.15, gain 0.7,
x gain 0.3) scored 87 % standing; weaker position feedback, intermittency, lapses and
command-proportional noise bring the panel below it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from droil_ros.robots.spec import RobotSpec
from droil_ros.sim.lqr import LQRController

START_TILT = 0.05  # rad: a session starts near upright (a person lets go of a robot held upright)


@dataclass(frozen=True)
class HumanParams:
    delay_steps: int = 2          # perception delay, control steps (5 ms each)
    tilt_noise: float = 0.01      # rad, std of the perceived tilt
    gain: float = 0.7             # fraction of the LQR gain
    x_gain: float = 0.1           # further fraction on displacement: weak position feedback
    gain_jitter: float = 0.1      # std of the log gain's wander (inconsistent feedback)
    gain_tau: float = 1.0         # s, correlation time of that wander
    threshold: float = 0.01       # rad: under this perceived tilt, corrections are intermittent
    refresh: float = 0.1          # s between corrections near upright
    lapse_rate: float = 0.1       # lapses per second
    lapse_seconds: float = 0.06   # s a lapse holds the stick
    ou_sigma: float = 0.12        # motor remnant std, fraction of the torque limit
    ou_tau: float = 0.2           # s, its correlation time
    signal_noise: float = 0.15    # std of the command-proportional noise, fraction of |u|
    joystick_hz: float = 50.0     # stick read rate
    dead_zone: float = 0.05       # fraction of full deflection read as zero
    bits: int = 8                 # stick resolution


# per-demonstrator spread: name -> (low, high), drawn uniformly (integers inclusive)
DEMONSTRATOR_RANGES = {
    "delay_steps": (1, 2),
    "tilt_noise": (0.008, 0.017),  # 0.5-1 degree
    "gain": (0.6, 0.75),
    "x_gain": (0.03, 0.15),
    "gain_jitter": (0.05, 0.15),
    "threshold": (0.005, 0.015),
    "refresh": (0.05, 0.15),
    "lapse_rate": (0.05, 0.2),
    "lapse_seconds": (0.03, 0.08),
    "ou_sigma": (0.1, 0.14),
    "signal_noise": (0.1, 0.2),
    "dead_zone": (0.05, 0.1),
}


def draw_params(rng: np.random.Generator, nominal: HumanParams = HumanParams()) -> HumanParams:
    """One demonstrator: every parameter of ``DEMONSTRATOR_RANGES`` drawn uniformly."""
    drawn = {}
    for name, (low, high) in DEMONSTRATOR_RANGES.items():
        drawn[name] = (int(rng.integers(low, high + 1)) if isinstance(low, int)
                       else float(rng.uniform(low, high)))
    return replace(nominal, **drawn)


def demonstrators(n: int, seed: int) -> list[HumanParams]:
    """``n`` demonstrators drawn from ``seed``: the same seed gives the same people."""
    rng = np.random.default_rng(seed)
    return [draw_params(rng) for _ in range(n)]


class OrnsteinUhlenbeck:
    """Zero-mean, stationary std ``sigma``, correlation time ``tau``; exact discretisation."""

    def __init__(self, sigma: float, tau: float, dt: float):
        self.decay = math.exp(-dt / tau)
        self.scale = sigma * math.sqrt(1.0 - self.decay ** 2)
        self.sigma = sigma
        self.value = 0.0

    def reset(self, rng: np.random.Generator) -> None:
        self.value = float(rng.normal(0.0, self.sigma))

    def step(self, rng: np.random.Generator) -> float:
        self.value = self.decay * self.value + self.scale * float(rng.normal())
        return self.value


class HumanDemonstrator:
    """A person balancing (and, with ``v_ref``, driving) the robot by commanding the wheel torque.

    Same interface as ``LQRController``: ``reset`` before a session, then one call per control
    step. Deterministic given ``seed``: each ``reset()`` without a generator continues the
    demonstrator's own stream, so successive sessions differ but replay exactly."""

    def __init__(self, robot: RobotSpec, params: HumanParams = HumanParams(), v_ref: float = 0.0,
                 seed: int = 0):
        self.robot, self.params = robot, params
        self.lqr = LQRController(robot, v_ref=v_ref)  # the law a good person would approximate
        dt = robot.control_dt
        self.dt = dt
        self.weights = np.array([1.0, params.x_gain, 1.0, 1.0])
        self.hold_steps = max(1, int(round(1.0 / (params.joystick_hz * dt))))
        self.u_max = float(robot.action_high[0])
        self.step_size = self.u_max / (2 ** (params.bits - 1) - 1)  # signed: -127..127 steps
        self.remnant = OrnsteinUhlenbeck(params.ou_sigma * self.u_max, params.ou_tau, dt)
        self.log_gain = OrnsteinUhlenbeck(params.gain_jitter, params.gain_tau, dt)
        self.own_rng = np.random.default_rng(seed)
        self.reset()

    @property
    def v_ref(self) -> float:
        return self.lqr.v_ref

    @v_ref.setter
    def v_ref(self, value: float) -> None:
        self.lqr.v_ref = value

    def reset(self, rng: np.random.Generator | None = None) -> None:
        self.rng = rng if rng is not None else self.own_rng
        self.lqr.reset()
        self.seen: deque[np.ndarray] = deque(maxlen=self.params.delay_steps + 1)
        self.remnant.reset(self.rng)
        self.log_gain.reset(self.rng)
        self.stick = 0.0
        self.step = 0
        self.since_correction = math.inf
        self.lapse_left = 0.0

    def feedback(self, perceived: np.ndarray) -> float:
        """The intended torque: the detuned, wandering LQR law on what the person perceives."""
        lqr = self.lqr
        theta, x, theta_dot, x_dot = perceived
        error = np.array([theta, x - lqr.x_ref, theta_dot, x_dot - lqr.v_ref])
        gain = self.params.gain * math.exp(self.log_gain.value)
        return float(-(gain * lqr.gain[0] * self.weights) @ error)

    def joystick(self, hand: float) -> float:
        """What the stick reports for a hand torque: dead zone, then 8-bit steps, within limits."""
        hand = float(np.clip(hand, -self.u_max, self.u_max))
        if abs(hand) < self.params.dead_zone * self.u_max:
            return 0.0
        return round(hand / self.step_size) * self.step_size

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        p, rng = self.params, self.rng
        perceived = np.array(obs, dtype=np.float64)
        perceived[0] += rng.normal(0.0, p.tilt_noise)
        self.seen.append(perceived)
        lqr = self.lqr  # the person's moving target: where the robot should be at v_ref
        lqr.x_ref = float(np.clip((lqr.x_ref or 0.0) + lqr.v_ref * self.dt,
                                  obs[1] - lqr.max_lead, obs[1] + lqr.max_lead))
        self.remnant.step(rng)
        self.log_gain.step(rng)
        if self.step % self.hold_steps == 0:
            self._read_stick(self.seen[0])
        self.step += 1
        return self.robot.clip_action(np.array([self.stick]))

    def _read_stick(self, perceived: np.ndarray) -> None:
        """One joystick read (every ``hold_steps``): the stick moves unless the person is in a
        lapse or, near upright, between intermittent corrections."""
        p, rng = self.params, self.rng
        period = self.hold_steps * self.dt
        self.since_correction += period
        if self.lapse_left > 0:
            self.lapse_left -= period
            return
        if rng.random() < p.lapse_rate * period:
            self.lapse_left = p.lapse_seconds - period
            return
        if abs(perceived[0]) < p.threshold and self.since_correction < p.refresh:
            return
        self.since_correction = 0.0
        intended = self.feedback(perceived)
        hand = intended * (1.0 + p.signal_noise * rng.normal()) + self.remnant.value
        self.stick = self.joystick(hand)
