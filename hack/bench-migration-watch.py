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


def matched_pods():
    out = subprocess.run(
        ["kubectl", "get", "residencypolicy", "bench", "-o", "jsonpath={.status.matchedPods}"],
        capture_output=True, text=True).stdout
    return int(out or 0)


def main():
    pods, start = int(sys.argv[1]), int(sys.argv[2]) / 1000
    where, lock = {}, threading.Lock()
    threading.Thread(target=follow, args=(where, lock), daemon=True).start()
    detected = None
    while True:
        if detected is None and matched_pods() >= pods:
            detected = time.time() - start
        with lock:
            inside = sum(1 for phase, node in where.values()
                         if phase == "Running" and node.startswith(ENCLAVE_SITES))
        if inside >= pods and detected is not None:
            print(int(detected * 1000), int((time.time() - start) * 1000))
            return
        time.sleep(0.25)


if __name__ == "__main__":
    main()
