// The neptun-chat binary as the browser tests run it: started on a database at a
// loopback address, its origin read from its start-up log line, and stopped with
// SIGTERM. Not a test file itself (node's test runner picks `*.test.mjs`).

import { spawn } from 'node:child_process';

const BIN = process.env.NEPTUN_BIN;
// Generous: a loaded 2-core machine starting a browser beside it.
const START_TIMEOUT_MS = 30_000;

/**
 * Starts `neptun-chat --database <database> serve` on `bind` (a free port by default),
 * with plain-HTTP cookies and `args` added; resolves with the process and its origin.
 * A server that does not report its address in time is stopped.
 */
export function spawnServer(database, { bind = '127.0.0.1:0', args = [] } = {}) {
  const child = spawn(
    BIN,
    ['--database', database, 'serve', '--bind', bind, '--cookie-secure', 'false', ...args],
    { env: { PATH: process.env.PATH, RUST_LOG: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server did not report its address in time:\n${log}`));
    }, START_TIMEOUT_MS);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const match = log.match(/listening on \D*?(127\.0\.0\.1:\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, origin: `http://${match[1]}` });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}) during start-up:\n${log}`));
    });
  });
}

/** Stops a server with SIGTERM, as a supervisor would, and waits for it to exit. */
export async function stopServer(child) {
  if (child && child.exitCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}
