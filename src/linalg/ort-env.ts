/**
 * Environment for onnxruntime, set before its native library loads (import this module before
 * 'onnxruntime-node'). onnxruntime ≥ 1.2x on Linux starts a telemetry system with every process:
 * it leaves an empty `mat-debug-<pid>.log` and a `.ses` file in $TMPDIR, writes a device id and a
 * database under ~/.cache/Microsoft, tries HTTPS uploads, and prints a warning when HOME is not
 * writable. A command-line tool must not litter the user's machine or phone home, so it is off
 * unless the user set ORT_DISABLE_TELEMETRY themselves.
 */
process.env['ORT_DISABLE_TELEMETRY'] ??= '1';
