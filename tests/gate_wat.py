"""WASM test modules for the action gate, in WAT, following the ABI in docs/gate.md
(exports ``memory``, ``alloc(len) -> ptr``, ``run(ptr, len) -> (out_ptr << 32) | out_len``)."""

import hashlib

import wasmtime

# A bump allocator that grows memory when it must (and traps when it cannot).
ALLOC = """
  (global $top (mut i32) (i32.const 1024))
  (func $alloc (export "alloc") (param $n i32) (result i32) (local $p i32) (local $end i32)
    (local.set $p (global.get $top))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.div_u (local.get $n) (i32.const 65536)) (i32.const 1)))
                    (i32.const -1))
          (then unreachable))))
    (global.set $top (local.get $end))
    (local.get $p))
"""

PACK = """(i64.or (i64.shl (i64.extend_i32_u {ptr}) (i64.const 32)) (i64.extend_i32_u {len}))"""

# Logs the request and answers {"echo": <request>}.
ECHO = f"""
(module
  (import "mandate" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{{\\"echo\\":")
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (local $out i32)
    (call $log (local.get $p) (local.get $n))
    (local.set $out (call $alloc (i32.add (local.get $n) (i32.const 9))))
    (memory.copy (local.get $out) (i32.const 0) (i32.const 8))
    (memory.copy (i32.add (local.get $out) (i32.const 8)) (local.get $p) (local.get $n))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $n) (i32.const 8))) (i32.const 125))
    {PACK.format(ptr="(local.get $out)", len="(i32.add (local.get $n) (i32.const 9))")}))
"""

# Answers {} without logging (no imports at all).
EMPTY = f"""
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{{}}")
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (i64.const 2)))
"""

# Never returns.
LOOP = f"""
(module
  (memory (export "memory") 1)
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (loop $l (br $l)) (i64.const 0)))
"""

# Asks for 64 MiB more memory and traps when refused.
GROW = f"""
(module
  (memory (export "memory") 1)
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1)) (then unreachable))
    (i64.const 0)))
"""

# Starts with 25 MiB of memory.
BIG_MEMORY = f"""
(module
  (memory (export "memory") 400)
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (i64.const 0)))
"""

# Sends the request body (an http request) through mandate.http `times` times; answers the last answer.
HTTP = """
(module
  (import "mandate" "http" (func $http (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  {alloc}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (local $r i64) (local $i i32)
    (loop $again
      (local.set $r (call $http (local.get $p) (local.get $n)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const {times}))))
    (local.get $r)))
"""

# Imports WASI, which no manifest can declare.
WASI = f"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (i64.const 0)))
"""

# Reports failure -7.
FAIL = f"""
(module
  (memory (export "memory") 1)
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (i64.const -7)))
"""

# Answers bytes that are not JSON.
NOT_JSON = f"""
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "nope")
  {ALLOC}
  (func (export "run") (param $p i32) (param $n i32) (result i64) (i64.const 4)))
"""

# Lacks alloc.
NO_ALLOC = """
(module
  (memory (export "memory") 1)
  (func (export "run") (param $p i32) (param $n i32) (result i64) (i64.const 0)))
"""


def http_module(times: int = 1) -> str:
    return HTTP.format(alloc=ALLOC, times=times)


def compiled(wat: str) -> tuple[str, bytes]:
    """(digest, bytes) of a WAT module."""
    data = wasmtime.wat2wasm(wat)
    return "sha256:" + hashlib.sha256(data).hexdigest(), bytes(data)
