#!/usr/bin/env python3
"""Follows bench-migration's run: when the policy's status counts every pod
(detection) and when every pod runs inside the enclave (migration), in milliseconds
after the start. One watch on the bench's pods, not a list of every pod twice a second:
at 10,000 pods that poller took most of a core from the cluster it measures.

Usage: bench-migration-watch.py <pods> <start-ms>; prints "<detected-ms> <done-ms>".
"""

import subprocess
import sys
import threading
import time

ENCLAVE_SITES = ("dublin", "norway")


def follow(where, lock):
    """Keeps `where` (pod name -> (phase, node)) up to date from one watch."""
    template = "{.type} {.object.metadata.name} {.object.status.phase} {.object.spec.nodeName}{\"\\n\"}"
    watch = subprocess.Popen(
        ["kubectl", "get", "pods", "-n", "bench", "--watch", "--output-watch-events",
         "-o", "jsonpath=" + template],
        stdout=subprocess.PIPE, text=True)
    for line in watch.stdout:
        kind, name, phase, node = (line.split() + ["", "", "", ""])[:4]
        with lock:
            if kind == "DELETED":
                where.pop(name, None)
            else:
                where[name] = (phase, node)
    sys.exit("the watch on the bench's pods ended")


def follow_policy(pods, start, detected):
    """Sets detected[0] to when the policy's status first counts every pod, from a watch
    (a poll would add up to its interval and a kubectl start to the figure)."""
    watch = subprocess.Popen(
        ["kubectl", "get", "residencypolicy", "bench", "--watch",
         "-o", "jsonpath={.status.matchedPods}{\"\\n\"}"],
        stdout=subprocess.PIPE, text=True)
    for line in watch.stdout:
        if int(line.strip() or 0) >= pods:
            detected[0] = time.time() - start
            watch.terminate()
            return
    sys.exit("the watch on the policy ended")


def main():
    pods, start = int(sys.argv[1]), int(sys.argv[2]) / 1000
    where, lock = {}, threading.Lock()
    threading.Thread(target=follow, args=(where, lock), daemon=True).start()
    detected = [None]
    policy = threading.Thread(target=follow_policy, args=(pods, start, detected), daemon=True)
    policy.start()
    while True:
        if detected[0] is None and not policy.is_alive():
            sys.exit("the watch on the policy ended before the status counted every pod")
        with lock:
            inside = sum(1 for phase, node in where.values()
                         if phase == "Running" and node.startswith(ENCLAVE_SITES))
        if inside >= pods and detected[0] is not None:
            print(int(detected[0] * 1000), int((time.time() - start) * 1000))
            return
        time.sleep(0.25)


if __name__ == "__main__":
    main()
