#!/usr/bin/env node
// ReplyX bot worker: started by scalable_bot_manager.js (child_process.fork, one per worker slot,
// `--worker-id=K`). Connects to the message queue, then handles messages and reports its counter
// to the manager over IPC. Exits cleanly on SIGTERM/SIGINT and as soon as the manager goes away.
'use strict';

const idArg = process.argv.find((a) => a.startsWith('--worker-id='));
const WORKER_ID = idArg ? idArg.slice('--worker-id='.length) : (process.env.BOT_WORKER_ID || '?');

process.stdout.on('error', () => {});

function log(level, message) {
  process.stdout.write(`${new Date().toISOString()} ${level} [worker-${WORKER_ID}] ${message}\n`);
}

if (typeof process.send !== 'function') {
  process.stderr.write('bot_worker.js is started by scalable_bot_manager.js (it needs the IPC channel): ' +
    'run `npm start`\n');
  process.exit(64);
}

let handled = 0;
let timer = null;
let started = false;
let stopping = false;

function report(msg) {
  if (process.connected) process.send(msg, () => {});
}

function stop(reason) {
  if (stopping) return;
  stopping = true;
  if (timer) clearInterval(timer);
  log('INFO', `stopping (${reason}) after ${handled} messages`);
  if (!process.connected) process.exit(0);
  // Tell the manager this exit is a stop, not a crash (PM2 signals the whole process tree).
  process.send({ type: 'stopping', reason }, () => process.exit(0));
  setTimeout(() => process.exit(0), 300).unref();
}

// Simulated connection to the message queue the bots consume.
function connectQueue() {
  return new Promise((resolve) => setTimeout(resolve, 150));
}

// v2.1.0: preload the reply templates so that the first answer of a dialog does not wait for the
// backend. Templates come from the backend's template API (simulated here).
const replyTemplates = new Map();

function fetchReplyTemplates() {
  return new Promise((resolve) => setTimeout(() => resolve([
    { id: 'greeting', body: 'Hello! How can I help you today?' },
    { id: 'handoff', body: 'Let me connect you with a human operator.' },
    // Legacy templates still carry `text` instead of `body`.
    { id: 'fallback', text: "Sorry, I didn't get that. Could you rephrase?" },
  ]), 2000));
}

async function warmReplyTemplates() {
  const templates = await fetchReplyTemplates();
  for (const template of templates) replyTemplates.set(template.id, template.body.trim());
  log('INFO', `warmed ${replyTemplates.size} reply templates`);
}

function handleMessages() {
  // A batch of 1-3 incoming chat messages answered by the bot.
  handled += 1 + Math.floor(Math.random() * 3);
  report({ type: 'stats', messages_handled: handled });
}

async function start(settings) {
  started = true;
  await connectQueue();
  await warmReplyTemplates();
  if (stopping) return;
  timer = setInterval(handleMessages, settings.message_interval_ms || 250);
  report({ type: 'ready', worker_id: WORKER_ID, pid: process.pid });
  log('INFO', `ready (pid ${process.pid}, release ${settings.release || 'unknown'})`);
}

process.on('message', (msg) => {
  if (!msg || typeof msg !== 'object') return;
  if (msg.type === 'init' && !started) start(msg);
  else if (msg.type === 'stop') stop('asked by the manager');
});
process.on('disconnect', () => stop('the manager went away'));
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

// A manager that never sends its settings is broken: do not linger.
setTimeout(() => {
  if (!started) {
    log('ERROR', 'no init message from the manager within 10 s; exiting');
    process.exit(1);
  }
}, 10000).unref();
