"""A client of a running ROS graph for scripts (``droil demo``, the tests): calls services, sets
parameters and listens to topics from a node spun in a thread of its own.

The node lives in a context of its own, so a script can use several (and the tests one per
test) without touching the global rclpy context that node processes use.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.signals import SignalHandlerOptions

from droil_ros.errors import DroilError

# clients closed with ``leaving=True``: referenced until the process ends (freeing one destroys its
# DDS entities, the step that can hang)
LEFT_OPEN: list[GraphClient] = []


class GraphClient:
    """Subclasses create their subscriptions, publishers and timers in ``setup``, which runs
    before the executor starts spinning; callbacks run in the spin thread, so shared state
    goes under ``self.lock``."""

    def __init__(self, domain: int | None = None, name: str = "droil_client"):
        self.context = Context()
        # a client lives in someone else's process: Ctrl-C stays Python's KeyboardInterrupt there
        # (rclpy's own handler, installed by the first init, would shut the contexts down instead)
        rclpy.init(context=self.context, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.clients: dict[str, object] = {}
        self.setup()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def setup(self) -> None:
        """Create the subscriptions, publishers and timers of the client."""

    @staticmethod
    def wait_for(predicate: Callable[[], object], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    def result(self, future, timeout: float = 10.0, source: str = "the service"):
        if not self.wait_for(future.done, timeout):
            raise DroilError(f"no answer from {source} within {timeout:g} s")
        return future.result()

    def client(self, srv_type, name: str):
        """The client of service ``name`` (one per name). Create it in ``setup``, before the server
        starts, where the first call must be answered: a server that discovers the client's response
        reader only after a request arrives drops its answer (on a loaded machine, discovery of a
        new endpoint can take seconds)."""
        if name not in self.clients:
            self.clients[name] = self.node.create_client(srv_type, name)
        return self.clients[name]

    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        """Call service ``name`` and return its response."""
        client = self.client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise DroilError(f"no service {name} within {timeout:g} s")
        return self.result(client.call_async(request), timeout, name)

    def parameters(self, node_name: str, timeout: float = 10.0) -> AsyncParameterClient:
        key = f"parameters:{node_name}"
        if key not in self.clients:
            client = AsyncParameterClient(self.node, node_name)
            if not client.wait_for_services(timeout_sec=timeout):
                raise DroilError(f"no parameter services of node {node_name}")
            self.clients[key] = client
        return self.clients[key]

    def set_parameter(self, node_name: str, name: str, value, timeout: float = 10.0) -> tuple[bool, str]:
        """Set one parameter of another node; (accepted, reason)."""
        future = self.parameters(node_name, timeout).set_parameters([Parameter(name, value=value)])
        result = self.result(future, timeout, node_name).results[0]
        return result.successful, result.reason

    def close(self, leaving: bool = False) -> None:
        """Stop spinning and destroy the node. ``leaving``: the process ends next, through
        ``exit_process``, and the node's DDS entities are left to the operating system: Fast DDS
        3.2 can deadlock destroying a writer while its peers leave (eProsima/Fast-DDS#6193,
        #6502), which kept a Ctrl-C'd ``droil demo`` alive for good."""
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)
        if leaving:
            LEFT_OPEN.append(self)
            return
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` without destroying the DDS entities of clients closed with
    ``leaving=True`` (their peers see them leave when their lease ends)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
