"""eef.memory: the resident set, and freed heap pages given back to the system."""

import json
import subprocess
import sys

from eef.memory import release, rss_mb

# ~400 MB of 4 KB blocks (above pymalloc's 512 bytes: glibc's malloc), every 64th kept alive so
# that the freed ones are holes inside the heap that free() alone does not return
_HOLES = """
import gc, json
from eef.memory import release, rss_mb
start = rss_mb()
blocks = [bytes(4096) for _ in range(100_000)]
keep = blocks[::64]
del blocks
gc.collect()
freed = rss_mb()
mem = release()
print(json.dumps({"start": start, "freed": freed, **mem}))
"""


def test_rss_is_this_process_s_resident_set():
    mb = rss_mb()
    assert mb is not None and 10 < mb < 1 << 20
    import os
    assert rss_mb(os.getpid()) is not None
    child = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); "
                              "time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # the interpreter is up
        assert 0 < rss_mb(child.pid) < mb + 100
    finally:
        child.kill()
        child.wait()
    assert rss_mb(child.pid) is None  # gone: None, no exception
    mem = release()
    assert set(mem) == {"before_mb", "after_mb"} and mem["after_mb"] > 0


def test_release_returns_freed_heap_holes_to_the_system():
    out = subprocess.run([sys.executable, "-c", _HOLES], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["freed"] - m["start"] > 300      # free() kept the holes mapped
    assert m["freed"] - m["after_mb"] > 250   # malloc_trim gave them back
