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


# -- the allocator the eef command runs on ------------------------------------------------------
import os  # noqa: E402

import pytest  # noqa: E402

from eef.memory import ALLOCATORS, allocator, allocator_env, jemalloc_library  # noqa: E402

_SHOW = ("from eef.cli import main\n"
         "import sys; sys.argv = ['eef', '--help']\n"
         "import eef.memory as m; m.use_allocator()\n"
         "print(m.allocator(), flush=True)\n")


def _fake_lib(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    return str(lib.resolve())


def test_allocator_env_chooses_jemalloc_by_default(tmp_path):
    lib = _fake_lib(tmp_path)
    env = allocator_env({"EEF_JEMALLOC": lib, "LD_PRELOAD": "libother.so", "X": "1"})
    assert env["LD_PRELOAD"] == f"{lib} libother.so" and env["X"] == "1"
    assert allocator_env({"EEF_JEMALLOC": lib, "LD_PRELOAD": f"a.so:{lib}"}) is None  # loaded
    assert allocator_env({"EEF_JEMALLOC": lib, "EEF_ALLOCATOR": "System"}) is None
    assert ALLOCATORS[0] == "jemalloc"


def test_allocator_env_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="EEF_ALLOCATOR='tcmalloc': one of jemalloc, system"):
        allocator_env({"EEF_ALLOCATOR": "tcmalloc"})
    with pytest.raises(ValueError, match="is not a file"):
        allocator_env({"EEF_JEMALLOC": str(tmp_path / "missing.so")})
    assert allocator_env({"EEF_JEMALLOC": str(tmp_path / "missing.so"),
                          "EEF_ALLOCATOR": "system"}) is None  # not looked for


@pytest.mark.skipif(jemalloc_library({}) is None, reason="no jemalloc library (ray not installed)")
def test_the_eef_command_reexecutes_itself_on_jemalloc():
    env = {k: v for k, v in os.environ.items()
           if k not in ("EEF_ALLOCATOR", "EEF_JEMALLOC", "LD_PRELOAD")}
    assert allocator() == "system"  # pytest itself: not re-executed
    runs = {}
    for choice in ("jemalloc", "system"):
        out = subprocess.run([sys.executable, "-c", _SHOW], capture_output=True, text=True,
                             timeout=120, env={**env, "EEF_ALLOCATOR": choice})
        assert out.returncode == 0, out.stderr
        runs[choice] = out.stdout.split()
    assert runs == {"jemalloc": ["jemalloc"], "system": ["system"]}  # one process line each
    bad = subprocess.run([sys.executable, "-c", "from eef.cli import main; main()"],
                         capture_output=True, text=True, timeout=120,
                         env={**env, "EEF_ALLOCATOR": "nope"})
    assert bad.returncode == 2 and "EEF_ALLOCATOR='nope'" in bad.stderr
