// A front end on another origin uses the API in a real browser: headless Chromium loads
// a page from one local server and, with fetch(..., {credentials: 'include'}), signs up,
// creates a chat and stores and reads messages on the API, which runs with
// --cors-origin set to that page's origin. A page from an origin that is not listed
// cannot read the API's answers. And the page follows the user's changes with
// EventSource, across a restart of the API, seeing every message once and in order.
//
// Both origins are http://127.0.0.1 with different ports: cross-origin but same-site,
// as a dev server on localhost:3000 talking to an API on localhost:8080 is, so the
// SameSite=Lax session cookie goes along. The API runs with --cookie-secure false
// because the page is plain HTTP.
//
// Needs NEPTUN_BIN (the neptun-chat binary) and Chromium at CHROMIUM (default
// /usr/bin/chromium); scripts/browser-check.sh provides both. Everything this test
// starts, it stops.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import { spawnServer, stopServer } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Generous: a loaded 2-core machine starting a browser.
const START_TIMEOUT_MS = 30_000;

let work;
let pageServers = [];
let api;
let apiOrigin;
let browser;

/** Serves a blank page on 127.0.0.1 at a free port; resolves with the server and its origin. */
function servePage() {
  const server = createServer((request, response) => {
    if (request.url === '/favicon.ico') {
      response.writeHead(204).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>front end</title><p>front end</p>');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, origin: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

/** Starts the API on `bind` (a free port by default) with `corsOrigin` listed; resolves with its origin. */
async function startApi(corsOrigin, bind = '127.0.0.1:0') {
  const started = await spawnServer(join(work, 'neptun.db'), {
    bind,
    args: ['--cors-origin', corsOrigin],
  });
  api = started.child;
  return started.origin;
}

/** Runs `fetch` inside `page`, so the browser's CORS rules apply; returns what the page could see. */
function fetchInPage(page, url, init) {
  return page.evaluate(
    async ({ url, init }) => {
      try {
        const response = await fetch(url, { credentials: 'include', ...init });
        return {
          status: response.status,
          body: await response.text(),
          requestId: response.headers.get('x-request-id'),
        };
      } catch (error) {
        return { error: String(error) };
      }
    },
    { url, init },
  );
}

before(async () => {
  assert.ok(process.env.NEPTUN_BIN, 'NEPTUN_BIN names the neptun-chat binary');
  work = mkdtempSync(join(tmpdir(), 'neptun-browser-'));
  pageServers = [await servePage(), await servePage()];
  apiOrigin = await startApi(pageServers[0].origin);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: START_TIMEOUT_MS,
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
  await stopServer(api);
  for (const { server } of pageServers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a page on a listed origin signs up, then stores and reads messages with its session cookie', async () => {
  // Arrange
  const page = await browser.newPage();
  await page.goto(`${pageServers[0].origin}/`);
  const json = (method, body, headers = {}) => ({
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

  // Act
  const signedUp = await fetchInPage(
    page,
    `${apiOrigin}/api/auth/sign-up`,
    json('POST', { email: 'front@example.org', password: 'a long enough password' }),
  );
  const session = await fetchInPage(page, `${apiOrigin}/api/auth/session`);
  const userId = JSON.parse(session.body ?? '{}').user?.id;
  const created = await fetchInPage(
    page,
    `${apiOrigin}/api/users/${userId}/chats`,
    json('POST', { name: 'From the browser', model: 'm' }),
  );
  const chatId = JSON.parse(created.body ?? '{}').chat?.id;
  const messagesUrl = `${apiOrigin}/api/users/${userId}/chats/${chatId}/messages`;
  const stored = await fetchInPage(
    page,
    messagesUrl,
    json('POST', { message: 'hello across origins', actor: 'user' }, { 'idempotency-key': 'browser-1' }),
  );
  const read = await fetchInPage(page, messagesUrl);
  const withoutCookie = await fetchInPage(page, `${apiOrigin}/api/auth/session`, { credentials: 'omit' });

  // Assert
  assert.equal(signedUp.status, 200, `sign-up: ${JSON.stringify(signedUp)}`);
  assert.equal(session.status, 200, `the session cookie was sent: ${JSON.stringify(session)}`);
  assert.ok(userId, `the session names the user: ${session.body}`);
  assert.equal(created.status, 200, `chat created: ${JSON.stringify(created)}`);
  assert.ok(Number.isInteger(chatId), `a chat id: ${created.body}`);
  assert.equal(stored.status, 200, `message stored: ${JSON.stringify(stored)}`);
  assert.equal(JSON.parse(stored.body).chatMessage.message, 'hello across origins');
  assert.ok(stored.requestId, 'the page can read the exposed X-Request-Id header');
  assert.equal(read.status, 200, `messages read: ${JSON.stringify(read)}`);
  assert.deepEqual(
    JSON.parse(read.body).chatMessages.map((m) => m.message),
    ['hello across origins'],
    read.body,
  );
  assert.equal(withoutCookie.status, 401, 'without the cookie the page reads the 401');
  await page.close();
});

test('a page on an origin that is not listed cannot read the API', async () => {
  // Arrange
  const page = await browser.newPage();
  await page.goto(`${pageServers[1].origin}/`);

  // Act
  const read = await fetchInPage(page, `${apiOrigin}/api/auth/session`);
  const preflighted = await fetchInPage(page, `${apiOrigin}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'front@example.org', password: 'a long enough password' }),
  });

  // Assert
  assert.match(read.error ?? '', /TypeError/, `blocked: ${JSON.stringify(read)}`);
  assert.match(preflighted.error ?? '', /TypeError/, `blocked: ${JSON.stringify(preflighted)}`);
  await page.close();
});

test('a page follows the user\'s changes with EventSource and resumes after the API restarts', async () => {
  // Arrange: a user with a chat, and an EventSource on their events.
  const page = await browser.newPage();
  await page.goto(`${pageServers[0].origin}/`);
  const json = (method, body) => ({
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await fetchInPage(
    page,
    `${apiOrigin}/api/auth/sign-up`,
    json('POST', { email: 'live@example.org', password: 'a long enough password' }),
  );
  const session = await fetchInPage(page, `${apiOrigin}/api/auth/session`);
  const userId = JSON.parse(session.body).user.id;
  const created = await fetchInPage(
    page,
    `${apiOrigin}/api/users/${userId}/chats`,
    json('POST', { name: 'Live', model: 'm' }),
  );
  const chatId = JSON.parse(created.body).chat.id;
  const messagesUrl = `${apiOrigin}/api/users/${userId}/chats/${chatId}/messages`;
  await page.evaluate((url) => {
    window.seen = [];
    window.opened = 0;
    const events = new EventSource(url, { withCredentials: true });
    events.onopen = () => { window.opened += 1; };
    events.addEventListener('message', (e) => {
      window.seen.push({ id: e.lastEventId, text: JSON.parse(e.data).message.message });
    });
  }, `${apiOrigin}/api/users/${userId}/events`);
  await page.waitForFunction(() => window.opened === 1, null, { timeout: START_TIMEOUT_MS });
  const batch = (texts) => json('POST', { messages: texts.map((content) => ({ content, role: 'user' })) });

  // Act: a batch live, then a restart of the API with more messages stored around it.
  const first = await fetchInPage(page, messagesUrl, batch(['one', 'two', 'three']));
  await page.waitForFunction(() => window.seen.length === 3, null, { timeout: START_TIMEOUT_MS });
  const port = new URL(apiOrigin).port;
  await stopServer(api);
  apiOrigin = await startApi(pageServers[0].origin, `127.0.0.1:${port}`);
  const second = await fetchInPage(page, messagesUrl, batch(['four', 'five']));
  await page.waitForFunction(() => window.seen.length >= 5 && window.opened >= 2, null, {
    timeout: START_TIMEOUT_MS,
  });
  // A moment for anything sent twice to show up.
  await fetchInPage(page, messagesUrl, json('POST', { message: 'six', actor: 'user' }));
  await page.waitForFunction(() => window.seen.length >= 6, null, { timeout: START_TIMEOUT_MS });
  const seen = await page.evaluate(() => window.seen);

  // Assert: every message once, in order, each with its own event id.
  assert.equal(first.status, 200, JSON.stringify(first));
  assert.equal(second.status, 200, JSON.stringify(second));
  assert.deepEqual(seen.map((e) => e.text), ['one', 'two', 'three', 'four', 'five', 'six']);
  assert.equal(new Set(seen.map((e) => e.id)).size, 6, JSON.stringify(seen));
  await page.close();
});
