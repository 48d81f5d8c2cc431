;; echo_wasm: the example WASM provider (docs/gate.md, "WASM module convention").
;; Its output is {"echo": <the request body>}; it logs one line through mandate.log.
;; Build: python -c "import wasmtime,sys; sys.stdout.buffer.write(wasmtime.wat2wasm(open('echo.wat').read()))" > echo.wasm
(module
  (import "mandate" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 0) "{\22echo\22:")
  (data (i32.const 16) "echo_wasm: run")

  ;; A bump allocator: the instance lives for one call, so nothing is ever freed.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
              (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; run(ptr, len) -> (out_ptr << 32) | out_len
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32)
    (local $out_len i32)
    (call $log (i32.const 16) (i32.const 14))
    (local.set $out_len (i32.add (local.get $len) (i32.const 9)))
    (local.set $out (call $alloc (local.get $out_len)))
    (memory.copy (local.get $out) (i32.const 0) (i32.const 8))
    (memory.copy (i32.add (local.get $out) (i32.const 8)) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $len) (i32.const 8))) (i32.const 125))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (local.get $out_len)))))
