#!/usr/bin/env node
// ReplyX bot manager: runs N bot worker processes (bot_worker.js), restarts the ones that crash,
// and reports them on GET /status (and a minimal GET /health) for the on-call engineer and the
// rollback tooling. Node standard library only.
//
// Configuration: config/production.json (rendered by the host; see config/production.json.example)
// or the file named by WORKERS_CONFIG. STATUS_PORT overrides status_port.
// Runtime state: <state_dir>/manager.pid and <state_dir>/status.json (`npm run clean-restart`
// removes the state directory before starting).
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { fork } = require('child_process');
const readline = require('readline');

const APP_DIR = __dirname;
const WORKER_SCRIPT = path.join(APP_DIR, 'bot_worker.js');
const STARTED_AT = Date.now();

// ---------------------------------------------------------------------------------------------
// Logging: one line per event, "<ISO timestamp> <LEVEL> [component] message", on stdout.
process.stdout.on('error', () => {}); // a closed pipe (e.g. `npm start | head`) must not kill us

function log(level, message, component = 'manager') {
  process.stdout.write(`${new Date().toISOString()} ${level} [${component}] ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// Configuration

class ConfigError extends Error {}

const DEFAULTS = {
  workers: 3,
  status_port: 3001,
  host: '127.0.0.1',
  restart_delay_ms: 500,
  message_interval_ms: 250,
  shutdown_timeout_ms: 3000,
  state_dir: 'state',
};

function integer(data, key, min, max, file) {
  const value = data[key] === undefined ? DEFAULTS[key] : data[key];
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${file}: "${key}" must be an integer between ${min} and ${max} (got ${JSON.stringify(value)})`);
  }
  return value;
}

function loadConfig() {
  const file = path.resolve(process.env.WORKERS_CONFIG || path.join(APP_DIR, 'config', 'production.json'));
  let raw;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file} (${err.code || err.message}); ` +
      'render it from config/production.json.example or point WORKERS_CONFIG at it');
  }
  let data;
  try {
    data = JSON.parse(raw);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${err.message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(`config file ${file} must hold a JSON object`);
  }
  if (process.env.STATUS_PORT !== undefined && process.env.STATUS_PORT !== '') {
    const port = Number(process.env.STATUS_PORT);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new ConfigError(`STATUS_PORT must be a port number 1-65535 (got ${JSON.stringify(process.env.STATUS_PORT)})`);
    }
    data = Object.assign({}, data, { status_port: port });
  }
  const host = data.host === undefined ? DEFAULTS.host : data.host;
  if (typeof host !== 'string' || host === '') {
    throw new ConfigError(`${file}: "host" must be a non-empty string`);
  }
  const stateDir = data.state_dir === undefined ? DEFAULTS.state_dir : data.state_dir;
  if (typeof stateDir !== 'string' || stateDir === '') {
    throw new ConfigError(`${file}: "state_dir" must be a non-empty string`);
  }
  return {
    file,
    workers: integer(data, 'workers', 1, 64, file),
    status_port: integer(data, 'status_port', 1, 65535, file),
    host,
    restart_delay_ms: integer(data, 'restart_delay_ms', 0, 600000, file),
    message_interval_ms: integer(data, 'message_interval_ms', 10, 60000, file),
    shutdown_timeout_ms: integer(data, 'shutdown_timeout_ms', 100, 4000, file),
    state_dir: path.resolve(APP_DIR, stateDir),
  };
}

function readRelease() {
  try {
    const data = JSON.parse(fs.readFileSync(path.join(APP_DIR, 'release.json'), 'utf8'));
    if (data && typeof data.release === 'string' && data.release) return data.release;
  } catch (err) { /* fall back to package.json */ }
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(APP_DIR, 'package.json'), 'utf8'));
    if (pkg && pkg.version) return `v${pkg.version}`;
  } catch (err) { /* unknown */ }
  return 'unknown';
}

// ---------------------------------------------------------------------------------------------
// Runtime state files

function writeAtomic(file, text) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function readPid(file) {
  try {
    const pid = parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch (err) {
    return null;
  }
}

// Is `pid` a running bot manager? (A stale pid file may name a recycled pid.)
function isRunningManager(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code !== 'EPERM') return false;
  }
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /scalable_bot_manager|ProcessContainerFork/.test(cmdline);
  } catch (err) {
    return true; // no /proc: assume the worst
  }
}

function cleanState(stateDir) {
  const pidFile = path.join(stateDir, 'manager.pid');
  const pid = readPid(pidFile);
  if (pid && pid !== process.pid && isRunningManager(pid)) {
    throw new ConfigError(`a bot manager is still running (pid ${pid}, ${pidFile}); stop it before a clean restart`);
  }
  if (fs.existsSync(stateDir)) {
    fs.rmSync(stateDir, { recursive: true, force: true });
    log('INFO', `clean restart: removed runtime state ${stateDir}`);
  } else {
    log('INFO', `clean restart: no runtime state at ${stateDir}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Workers

class WorkerSlot {
  constructor(id) {
    this.id = id;
    this.child = null;
    this.pid = null;
    this.state = 'starting'; // starting | ready | restarting | stopped
    this.startedAt = null;
    this.messagesHandled = 0;
    this.restarts = 0;
    this.lastExit = null;
    this.stopReason = null;
    this.restartTimer = null;
  }

  toJSON(now) {
    return {
      id: this.id,
      pid: this.pid,
      state: this.state,
      uptime_s: this.child && this.startedAt ? Math.floor((now - this.startedAt) / 1000) : 0,
      messages_handled: this.messagesHandled,
      restarts: this.restarts,
      last_exit: this.lastExit,
    };
  }
}

class Manager {
  constructor(config, release) {
    this.config = config;
    this.release = release;
    this.slots = [];
    for (let id = 1; id <= config.workers; id += 1) this.slots.push(new WorkerSlot(id));
    this.server = null;
    this.shuttingDown = false;
    this.pidFile = path.join(config.state_dir, 'manager.pid');
    this.statusFile = path.join(config.state_dir, 'status.json');
  }

  // -- status -----------------------------------------------------------------------------------
  snapshot() {
    const now = Date.now();
    const active = this.slots.filter((s) => s.child && s.state === 'ready').length;
    const expected = this.config.workers;
    return {
      status: active >= expected ? 'ok' : 'degraded',
      active_workers: active,
      expected_workers: expected,
      release: this.release,
      pid: process.pid,
      uptime_s: Math.floor((now - STARTED_AT) / 1000),
      workers: this.slots.map((s) => s.toJSON(now)),
    };
  }

  saveStatus(extra) {
    try {
      fs.mkdirSync(this.config.state_dir, { recursive: true });
      const body = Object.assign(this.snapshot(), { written_at: new Date().toISOString() }, extra || {});
      writeAtomic(this.statusFile, `${JSON.stringify(body, null, 2)}\n`);
    } catch (err) {
      log('WARN', `cannot write ${this.statusFile}: ${err.message}`);
    }
  }

  // -- HTTP ---------------------------------------------------------------------------------------
  handle(req, res) {
    const url = (req.url || '/').split('?')[0];
    const send = (code, body, headers) => {
      const text = `${JSON.stringify(body)}\n`;
      res.writeHead(code, Object.assign({
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': Buffer.byteLength(text),
        'Cache-Control': 'no-store',
      }, headers || {}));
      res.end(req.method === 'HEAD' ? undefined : text);
    };
    if (url !== '/status' && url !== '/health') {
      send(404, { error: 'not found', endpoints: ['/status', '/health'] });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, { error: 'method not allowed' }, { Allow: 'GET, HEAD' });
      return;
    }
    const snap = this.snapshot();
    const code = snap.status === 'ok' ? 200 : 503;
    if (url === '/status') {
      send(code, snap);
    } else {
      send(code, {
        status: snap.status,
        active_workers: snap.active_workers,
        expected_workers: snap.expected_workers,
        release: snap.release,
      });
    }
  }

  listen() {
    const { host, status_port: port } = this.config;
    return new Promise((resolve, reject) => {
      const server = http.createServer((req, res) => this.handle(req, res));
      server.keepAliveTimeout = 2000;
      server.once('error', (err) => {
        if (err.code === 'EADDRINUSE') {
          reject(new ConfigError(`status port ${port} on ${host} is already in use (EADDRINUSE): ` +
            `another bot manager (or another service) is listening there; stop it, or set a free port ` +
            `in status_port / STATUS_PORT`));
        } else if (err.code === 'EACCES') {
          reject(new ConfigError(`cannot bind status port ${port} on ${host}: permission denied (EACCES)`));
        } else if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND') {
          reject(new ConfigError(`cannot bind status port ${port}: host ${host} is not a local address (${err.code})`));
        } else {
          reject(err);
        }
      });
      server.listen({ port, host }, () => {
        this.server = server;
        resolve();
      });
    });
  }

  // -- workers ------------------------------------------------------------------------------------
  spawn(slot) {
    slot.restartTimer = null;
    if (this.shuttingDown) return;
    const child = fork(WORKER_SCRIPT, [`--worker-id=${slot.id}`], {
      cwd: APP_DIR,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      execArgv: [],
      env: Object.assign({}, process.env, { BOT_WORKER_ID: String(slot.id) }),
    });
    slot.child = child;
    slot.pid = child.pid || null;
    slot.state = 'starting';
    slot.startedAt = Date.now();
    slot.messagesHandled = 0;
    slot.stopReason = null;

    // Worker stdout lines are already formatted; stderr (e.g. a crash's stack trace) is not.
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      process.stdout.write(`${line}\n`);
    });
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      if (line.trim()) log('ERROR', line, `worker-${slot.id}`);
    });

    child.on('message', (msg) => {
      if (!msg || slot.child !== child) return;
      if (msg.type === 'ready') {
        slot.state = 'ready';
        log('INFO', `worker ${slot.id} ready (pid ${child.pid})`);
        this.saveStatus();
      } else if (msg.type === 'stopping') {
        slot.stopReason = String(msg.reason || 'unknown');
      } else if (msg.type === 'stats' && Number.isInteger(msg.messages_handled)) {
        slot.messagesHandled = msg.messages_handled;
      }
    });
    child.on('error', (err) => {
      log('ERROR', `worker ${slot.id}: ${err.message}`);
      if (!child.pid) this.onExit(slot, child, null, null); // spawn failed: no 'exit' will follow
    });
    child.on('exit', (code, signal) => this.onExit(slot, child, code, signal));
    child.send({
      type: 'init',
      worker_id: slot.id,
      release: this.release,
      message_interval_ms: this.config.message_interval_ms,
    }, () => {});
    log('INFO', `started worker ${slot.id} (pid ${child.pid})`);
  }

  onExit(slot, child, code, signal) {
    if (slot.child !== child) return;
    const uptime = slot.startedAt ? (Date.now() - slot.startedAt) / 1000 : 0;
    slot.lastExit = { code, signal, at: new Date().toISOString(), uptime_s: Math.floor(uptime) };
    slot.child = null;
    slot.pid = null;
    if (this.shuttingDown) {
      slot.state = 'stopped';
      this.maybeFinish();
      return;
    }
    slot.state = 'restarting';
    const delay = this.config.restart_delay_ms;
    const next = `restarting in ${delay} ms (restart #${slot.restarts + 1})`;
    if (slot.stopReason && code === 0) {
      // Stopped by a signal from outside (e.g. PM2 signals the whole tree before it signals us).
      slot.lastExit.reason = slot.stopReason;
      log('WARN', `worker ${slot.id} (pid ${child.pid}) stopped on ${slot.stopReason} without the manager asking; ${next}`);
    } else {
      log('ERROR', `worker ${slot.id} (pid ${child.pid}) crashed after ${uptime.toFixed(1)}s ` +
        `(exit code ${code}, signal ${signal}); ${next}`);
    }
    this.saveStatus();
    slot.restartTimer = setTimeout(() => {
      slot.restarts += 1;
      this.spawn(slot);
    }, delay);
  }

  // -- lifecycle ----------------------------------------------------------------------------------
  shutdown(reason, exitCode = 0) {
    if (this.shuttingDown) {
      log('WARN', `${reason} received while stopping; still waiting for workers`);
      return;
    }
    this.shuttingDown = true;
    this.exitCode = exitCode;
    const running = this.slots.filter((s) => s.child);
    log('INFO', `${reason}: stopping ${running.length} workers`);
    for (const slot of this.slots) {
      if (slot.restartTimer) clearTimeout(slot.restartTimer);
      slot.restartTimer = null;
      if (!slot.child) slot.state = 'stopped';
    }
    if (this.server) {
      this.server.close();
      if (this.server.closeAllConnections) this.server.closeAllConnections();
    }
    for (const slot of running) {
      try { slot.child.kill('SIGTERM'); } catch (err) { /* already gone */ }
    }
    this.killTimer = setTimeout(() => {
      for (const slot of this.slots) {
        if (slot.child) {
          log('WARN', `worker ${slot.id} (pid ${slot.child.pid}) did not stop in ${this.config.shutdown_timeout_ms} ms: SIGKILL`);
          try { slot.child.kill('SIGKILL'); } catch (err) { /* already gone */ }
        }
      }
      // Last resort: never hang the stop (PM2/systemd would SIGKILL us and orphan nothing anyway,
      // the workers exit when their IPC channel closes).
      setTimeout(() => this.finish(), 500).unref();
    }, this.config.shutdown_timeout_ms);
    this.maybeFinish();
  }

  maybeFinish() {
    if (this.shuttingDown && this.slots.every((s) => !s.child)) this.finish();
  }

  finish() {
    if (this.finished) return;
    this.finished = true;
    if (this.killTimer) clearTimeout(this.killTimer);
    this.saveStatus({ status: 'stopped', active_workers: 0 });
    removePidFile(this.pidFile);
    log('INFO', `bot manager stopped (exit ${this.exitCode})`);
    process.exit(this.exitCode);
  }
}

function removePidFile(file) {
  try {
    if (readPid(file) === process.pid) fs.unlinkSync(file);
  } catch (err) { /* nothing to remove */ }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--clean-state');
  if (unknown.length) {
    log('ERROR', `unknown argument(s) ${unknown.join(' ')}; usage: node scalable_bot_manager.js [--clean-state]`);
    process.exit(64);
  }
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    log('ERROR', err.message);
    process.exit(78);
  }
  const release = readRelease();
  log('INFO', `ReplyX bot manager ${release} starting (pid ${process.pid}, node ${process.version})`);
  const manager = new Manager(config, release);
  try {
    await manager.listen();
  } catch (err) {
    log('ERROR', err instanceof ConfigError ? err.message : `cannot start status server: ${err.stack || err}`);
    process.exit(err instanceof ConfigError ? 98 : 1);
  }
  // The port is ours, so no other manager of this config is running: now clean state if asked.
  if (args.includes('--clean-state')) {
    try {
      cleanState(config.state_dir);
    } catch (err) {
      log('ERROR', err.message);
      process.exit(75);
    }
  }
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => manager.shutdown(sig, 0));
  process.on('SIGHUP', () => log('INFO', 'SIGHUP ignored (use a restart to reload the configuration)'));
  process.on('uncaughtException', (err) => {
    log('ERROR', `uncaught exception in the manager: ${err.stack || err}`);
    manager.shutdown('uncaughtException', 1);
  });
  process.on('exit', () => removePidFile(manager.pidFile));

  log('INFO', `status endpoint http://${config.host}:${config.status_port}/status ` +
    `(release ${release}, config ${config.file})`);
  fs.mkdirSync(config.state_dir, { recursive: true });
  writeAtomic(manager.pidFile, `${process.pid}\n`);
  log('INFO', `pid ${process.pid} written to ${manager.pidFile}; starting ${config.workers} workers`);
  for (const slot of manager.slots) manager.spawn(slot);
  manager.saveStatus();
}

main().catch((err) => {
  log('ERROR', `bot manager failed to start: ${err.stack || err}`);
  process.exit(1);
});
