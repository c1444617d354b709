// The web console at `/`, used as a person would in headless Chromium against the real
// binary on a fresh SQLite database: sign up, chats, single and batch messages, messages
// from the API and from another browser appearing live, HTML in a message shown as
// text, search, export, logout; a long chat read back by scrolling up; catching up
// after a restart; keyboard only; phone width; and two instances on one PostgreSQL
// database (a throwaway cluster from scripts/pg-tmp.sh; skipped without PostgreSQL).
//
// Screenshots of the main screens go to tests/browser/screenshots/ (not committed) for
// a reviewer to look at.
//
// Needs NEPTUN_BIN (the neptun-chat binary) and Chromium at CHROMIUM (default
// /usr/bin/chromium); scripts/browser-check.sh provides both. Everything this test
// starts, it stops.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { spawnServer, stopServer } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');
// Generous: a loaded 2-core machine starting a browser.
const START_TIMEOUT_MS = 30_000;
// "Within a second" in the issue; a little more for a loaded machine.
const LIVE_TIMEOUT_MS = 3_000;
const PASSWORD = 'a long enough password';

let work;
let server;
let origin;
let browser;

/** Starts the binary on the test's SQLite database at `bind` (a free port by default); resolves with its origin. */
async function startServer(bind = '127.0.0.1:0') {
  const started = await spawnServer(join(work, 'neptun.db'), { bind });
  server = started.child;
  return started.origin;
}


/** A fresh browser context and page on the console, with every CSP violation it reports collected. */
async function openConsole(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const violations = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) violations.push(message.text());
  });
  const response = await page.goto(`${origin}/`);
  return { context, page, response, violations };
}

async function signUp(page, email) {
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.locator('#workspace').waitFor();
}

/** Calls the API from Node with the browser context's session cookie, as a script or curl would. */
async function apiAs(context, method, path, body, at = origin) {
  const cookies = await context.cookies(at);
  const response = await fetch(`${at}${path}`, {
    method,
    headers: {
      cookie: cookies.map((c) => `${c.name}=${c.value}`).join('; '),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

const messageTexts = (page) => page.locator('#message-list .message .text').allTextContents();

async function createChat(page, name) {
  await page.fill('#new-chat-name', name);
  await page.getByRole('button', { name: 'Create chat' }).click();
  await page.locator('#chat-title', { hasText: name }).waitFor();
}

async function send(page, text, { role = 'user', batch = false } = {}) {
  await page.selectOption('#role', role);
  await page.setChecked('#batch', batch);
  await page.fill('#text', text);
  await page.getByRole('button', { name: 'Send' }).click();
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

before(async () => {
  assert.ok(process.env.NEPTUN_BIN, 'NEPTUN_BIN names the neptun-chat binary');
  mkdirSync(SCREENSHOTS, { recursive: true });
  work = mkdtempSync(join(tmpdir(), 'neptun-console-'));
  origin = await startServer();
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

const stopConsoleServer = () => stopServer(server);

after(async () => {
  await browser?.close();
  await stopConsoleServer();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the console is served from / under a strict content security policy', async (t) => {
  // Act
  const { context, page, response, violations } = await openConsole();
  await page.locator('#auth').waitFor();

  // Assert
  assert.equal(response.status(), 200);
  const csp = response.headers()['content-security-policy'] ?? '';
  const directives = csp.split(';').map((d) => d.trim());
  for (const expected of [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ]) {
    assert.ok(directives.includes(expected), `${expected} in ${csp}`);
  }
  assert.ok(!csp.includes('unsafe'), csp);
  assert.equal(response.headers()['x-content-type-options'], 'nosniff');
  const asset = await fetch(`${origin}/console/app.js`);
  assert.match(asset.headers.get('content-type'), /^text\/javascript/);
  assert.equal((await fetch(`${origin}/console/nope.js`)).status, 404);
  assert.deepEqual(violations, [], 'the page breaks none of its own policy');
  // Measured on a second load: the first includes starting the browser's renderer.
  await page.reload();
  await page.locator('#auth').waitFor();
  const render = await page.evaluate(() => {
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    return paint.startTime - performance.getEntriesByType('navigation')[0].responseEnd;
  });
  t.diagnostic(`first paint ${render.toFixed(1)} ms after the page arrived`);
  await screenshot(page, '1-sign-in');
  await context.close();
});

test('a person signs up, writes, sees messages live, searches, exports and logs out', async () => {
  // Arrange
  const { context, page, violations } = await openConsole();
  const email = 'ada@example.org';

  // Act + Assert: sign up and create a chat.
  await signUp(page, email);
  assert.equal(await page.textContent('#who'), email);
  await createChat(page, 'Trip planning');

  // A single message, then a batch in the other roles: shown in order, each with its role.
  await send(page, 'Hello from the console');
  await page.locator('#message-list .message').first().waitFor();
  await send(page, JSON.stringify([
    { content: 'An answer', role: 'assistant' },
    { content: 'A system note', role: 'system' },
  ]), { batch: true });
  await page.locator('#message-list .message').nth(2).waitFor();
  assert.deepEqual(await messageTexts(page), ['Hello from the console', 'An answer', 'A system note']);
  assert.deepEqual(
    await page.locator('#message-list .message').evaluateAll((items) => items.map((i) => i.className)),
    ['message role-user', 'message role-assistant', 'message role-system'],
  );

  // An invalid batch shows the API's issues.
  await send(page, JSON.stringify([{ content: '', role: 'robot' }]), { batch: true });
  const issues = page.locator('#composer-error li');
  await issues.first().waitFor();
  assert.match((await issues.allTextContents()).join('\n'), /messages\.0\.role: Invalid enum value/);

  // A message stored through the API appears live, once.
  const { user } = await apiAs(context, 'GET', '/api/auth/session');
  const chatId = Number(await page.getAttribute('.chat-link[aria-current="true"]', 'data-chat-id'));
  const messagesPath = `/api/users/${user.id}/chats/${chatId}/messages`;
  await apiAs(context, 'POST', messagesPath, { message: 'Live from the API', actor: 'assistant' });
  await page.locator('.message .text', { hasText: 'Live from the API' }).waitFor({ timeout: LIVE_TIMEOUT_MS });

  // And one written in another browser, signed in as the same person.
  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await otherPage.goto(`${origin}/`);
  await otherPage.fill('#email', email);
  await otherPage.fill('#password', PASSWORD);
  await otherPage.getByRole('button', { name: 'Log in' }).click();
  await otherPage.locator('.chat-link', { hasText: 'Trip planning' }).click();
  await send(otherPage, 'From the other browser', { role: 'assistant' });
  await page.locator('.message .text', { hasText: 'From the other browser' }).waitFor({ timeout: LIVE_TIMEOUT_MS });
  await other.close();

  // HTML in a message is text: no element is made from it and nothing runs.
  const hostile = '<img src=x onerror="window.pwned = true">';
  await send(page, hostile);
  // The answer and the event both deliver it; a later live message shows both have come.
  await apiAs(context, 'POST', messagesPath, { message: 'Second live', actor: 'assistant' });
  await page.locator('.message .text', { hasText: 'Second live' }).waitFor({ timeout: LIVE_TIMEOUT_MS });
  assert.deepEqual(await messageTexts(page), [
    'Hello from the console',
    'An answer',
    'A system note',
    'Live from the API',
    'From the other browser',
    hostile,
    'Second live',
  ]);
  assert.equal(await page.locator('#message-list img').count(), 0, 'no img element in the messages');
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  await screenshot(page, '2-chat');

  // Delete the last turn: the last answer and the user message it answered.
  await page.getByRole('button', { name: 'Delete last turn' }).click();
  await page.locator('#dialog').getByRole('button', { name: 'Delete' }).click();
  await page.locator('.message .text', { hasText: 'Second live' }).waitFor({ state: 'detached' });
  assert.deepEqual(await messageTexts(page), [
    'Hello from the console',
    'An answer',
    'A system note',
    'Live from the API',
    'From the other browser',
  ]);

  // A second chat, renamed; the list shows the newest activity first.
  await createChat(page, 'Books');
  await page.getByRole('button', { name: 'Rename' }).click();
  await page.fill('#dialog-input', 'Books to read');
  await page.locator('#dialog').getByRole('button', { name: 'Rename' }).click();
  await page.locator('#chat-title', { hasText: 'Books to read' }).waitFor();
  assert.deepEqual(await page.locator('.chat-link .chat-name').allTextContents(), [
    'Books to read',
    'Trip planning',
  ]);

  // Search finds a message in the other chat, marks the match, and jumps to it.
  await page.fill('#search-q', 'answer');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  const mark = page.locator('#results-list .snippet mark');
  await mark.first().waitFor();
  assert.equal((await mark.first().textContent()).toLowerCase(), 'answer');
  await screenshot(page, '3-search');
  await page.locator('#results-list .hit').first().click();
  await page.locator('#chat-title', { hasText: 'Trip planning' }).waitFor();
  assert.equal(await page.textContent('.message.found .text'), 'An answer');

  // Delete a chat: cancelling keeps it, confirming deletes it.
  await page.locator('.chat-link', { hasText: 'Books to read' }).click();
  await page.getByRole('button', { name: 'Delete chat' }).click();
  await page.locator('#dialog').getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await page.locator('.chat-link').count(), 2);
  await page.getByRole('button', { name: 'Delete chat' }).click();
  await page.locator('#dialog').getByRole('button', { name: 'Delete' }).click();
  await page.locator('.chat-link', { hasText: 'Books to read' }).waitFor({ state: 'detached' });

  // Export downloads the user's NDJSON, complete up to its end line.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'Export my data' }).click(),
  ]);
  const lines = readFileSync(await download.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines[0].format, 'neptun-chat-export');
  assert.deepEqual(lines.at(-1), { end: { chats: 1, messages: 5 } });

  // Logout returns to the sign-in form, and the session is gone.
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#auth').waitFor();
  const session = await page.evaluate(async () => (await fetch('/api/auth/session')).status);
  assert.equal(session, 401);

  // The API's own message is shown when signing up with a taken email.
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.locator('#auth-error', { hasText: 'already exists' }).waitFor();
  assert.deepEqual(violations, []);
  await context.close();
});

test('a long chat is read back by scrolling up, and a search hit far back in it is shown', async () => {
  // Arrange: 500 messages stored through the API.
  const { context, page } = await openConsole();
  await signUp(page, 'reader@example.org');
  await createChat(page, 'Long');
  const { user } = await apiAs(context, 'GET', '/api/auth/session');
  const chatId = Number(await page.getAttribute('.chat-link[aria-current="true"]', 'data-chat-id'));
  const texts = Array.from({ length: 500 }, (_, i) => `message ${i + 1}`);
  await apiAs(context, 'POST', `/api/users/${user.id}/chats/${chatId}/messages`, {
    messages: texts.map((content) => ({ content, role: 'user' })),
  });

  // Act: open the chat afresh, then scroll to the top until nothing older is left.
  await page.reload();
  await page.locator('.chat-link', { hasText: 'Long' }).click();
  await page.locator('.message .text', { hasText: 'message 500' }).waitFor();
  const firstPage = await page.locator('#message-list .message').count();
  for (let tries = 0; tries < 20 && !(await page.locator('#older').isHidden()); tries += 1) {
    await page.locator('#messages').evaluate((box) => { box.scrollTop = 0; });
    await page.waitForTimeout(150);
  }

  // Assert
  assert.ok(firstPage < 500, `the first view is one page, not the whole chat (${firstPage})`);
  assert.deepEqual(await messageTexts(page), texts);

  // A search hit far back in the chat: its pages are loaded until it can be shown.
  await page.reload();
  await page.locator('#workspace').waitFor();
  await page.fill('#search-q', '"message 3"');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.locator('#results-list .hit').first().click();
  await page.locator('.message.found').waitFor();
  assert.equal(await page.textContent('.message.found .text'), 'message 3');

  // Many hits come a page at a time.
  await page.fill('#search-q', 'message');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.locator('#results-title', { hasText: '20 results so far' }).waitFor();
  await page.getByRole('button', { name: 'More results' }).click();
  await page.locator('#results-title', { hasText: '40 results so far' }).waitFor();
  assert.equal(await page.locator('#results-list .hit').count(), 40);
  await context.close();
});

test('several chats are deleted at once after a confirmation', async () => {
  // Arrange
  const { context, page } = await openConsole();
  await signUp(page, 'tidy@example.org');
  for (const name of ['Keep', 'Draft 1', 'Draft 2']) await createChat(page, name);

  // Act
  for (const name of ['Draft 1', 'Draft 2']) await page.getByLabel(`Select ${name}`).check();
  await page.getByRole('button', { name: 'Delete selected (2)' }).click();
  await page.locator('#dialog').getByRole('button', { name: 'Delete' }).click();
  await page.locator('.chat-link', { hasText: 'Draft' }).first().waitFor({ state: 'detached' });

  // Assert
  assert.deepEqual(await page.locator('.chat-link .chat-name').allTextContents(), ['Keep']);
  const { user } = await apiAs(context, 'GET', '/api/auth/session');
  const { chats } = await apiAs(context, 'GET', `/api/users/${user.id}/chats`);
  assert.deepEqual(chats.map((chat) => chat.name), ['Keep']);
  await context.close();
});

test('after the server restarts, the open chat catches up on what it missed, each message once', async () => {
  // Arrange
  const { context, page } = await openConsole();
  await signUp(page, 'restart@example.org');
  await createChat(page, 'Across restarts');
  await send(page, 'before the restart');
  await page.locator('#message-list .message').first().waitFor();
  const { user } = await apiAs(context, 'GET', '/api/auth/session');
  const chatId = Number(await page.getAttribute('.chat-link[aria-current="true"]', 'data-chat-id'));

  // Act: a restart on the same port, and messages stored right after it.
  const port = new URL(origin).port;
  await stopConsoleServer();
  origin = await startServer(`127.0.0.1:${port}`);
  await apiAs(context, 'POST', `/api/users/${user.id}/chats/${chatId}/messages`, {
    messages: [
      { content: 'after the restart', role: 'assistant' },
      { content: 'and once more', role: 'user' },
    ],
  });
  await page.locator('.message .text', { hasText: 'and once more' }).waitFor({ timeout: START_TIMEOUT_MS });
  // A later message shows that nothing is still on its way twice.
  await apiAs(context, 'POST', `/api/users/${user.id}/chats/${chatId}/messages`, {
    message: 'last',
    actor: 'assistant',
  });
  await page.locator('.message .text', { hasText: 'last' }).waitFor({ timeout: LIVE_TIMEOUT_MS });

  // Assert
  assert.deepEqual(await messageTexts(page), [
    'before the restart',
    'after the restart',
    'and once more',
    'last',
  ]);
  await context.close();
});

test('the console is usable with the keyboard alone', async () => {
  // Arrange
  const { context, page } = await openConsole();
  await page.locator('#auth').waitFor();
  const keyboard = page.keyboard;

  // Act: sign up (the second button of the form), create a chat, send a message.
  await keyboard.type('keys@example.org');
  await keyboard.press('Tab');
  await keyboard.type(PASSWORD);
  await keyboard.press('Tab');
  await keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Sign up');
  await keyboard.press('Enter');
  await page.waitForFunction(() => document.activeElement?.id === 'new-chat-name');
  await keyboard.type('Typed');
  await keyboard.press('Enter');
  await page.waitForFunction(() => document.activeElement?.id === 'text');
  await keyboard.type('Sent without a mouse');
  await keyboard.press('Control+Enter');

  // Assert
  await page.locator('.message .text', { hasText: 'Sent without a mouse' }).waitFor();
  assert.equal(await page.textContent('#chat-title'), 'Typed');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'the focused element shows its focus');
  await context.close();
});

test('a session ended elsewhere returns the console to the sign-in form', async () => {
  // Arrange
  const { context, page } = await openConsole();
  await signUp(page, 'elsewhere@example.org');
  await createChat(page, 'Soon gone');

  // Act: the same session signed out by another client.
  await apiAs(context, 'POST', '/api/auth/logout');

  // Assert: the events stream ends, and the console notices without a click.
  await page.locator('#auth-error', { hasText: 'session has ended' }).waitFor({ timeout: 10_000 });
  assert.ok(await page.locator('#workspace').isHidden());
  await context.close();
});

test('the console is usable at phone width', async () => {
  // Arrange
  const { context, page } = await openConsole({ width: 375, height: 740 });

  // Act
  await signUp(page, 'phone@example.org');
  await createChat(page, 'On the go');
  await send(page, 'A message typed on a phone, long enough to wrap across the narrow screen.');
  await page.locator('#message-list .message').first().waitFor();

  // Assert: nothing wider than the screen, and the composer is reachable.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 375, `page width ${width}`);
  assert.ok(await page.locator('#text').isVisible());
  await screenshot(page, '4-phone');
  await context.close();
});

test('with two instances on PostgreSQL, a message stored through one appears live in a console on the other', async (t) => {
  // Arrange: a throwaway cluster (skipped where PostgreSQL is not installed) and two
  // instances on one database; the console is opened on the second.
  const pgTmp = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'scripts', 'pg-tmp.sh');
  const installed = spawnSync('bash', ['-c', 'ls /usr/lib/postgresql/*/bin/initdb'], { stdio: 'ignore' });
  if (installed.status !== 0 && !process.env.PG_BIN) {
    // CI sets this: there a missing PostgreSQL is a failure, not a reason to skip.
    assert.notEqual(process.env.NEPTUN_TEST_POSTGRES, 'required', 'PostgreSQL is required but not installed');
    t.skip('PostgreSQL is not installed (scripts/pg-tmp.sh install)');
    return;
  }
  const cluster = mkdtempSync(join(tmpdir(), 'neptun-console-pg-'));
  const instances = [];
  try {
    execFileSync('bash', [pgTmp, 'start', cluster], { stdio: ['ignore', 'ignore', 'inherit'] });
    const url = execFileSync('bash', [pgTmp, 'createdb', cluster, 'neptun'], { encoding: 'utf8' }).trim();
    // One after the other, so that the first has migrated the database.
    instances.push(await spawnServer(url));
    instances.push(await spawnServer(url));
    const [first, second] = instances;
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${second.origin}/`);
    await signUp(page, 'two@example.org');
    await createChat(page, 'Shared');
    const { user } = await apiAs(context, 'GET', '/api/auth/session', undefined, first.origin);
    const chatId = Number(await page.getAttribute('.chat-link[aria-current="true"]', 'data-chat-id'));

    // Act
    await apiAs(context, 'POST', `/api/users/${user.id}/chats/${chatId}/messages`, {
      message: 'Stored through the first instance',
      actor: 'assistant',
    }, first.origin);

    // Assert
    await page
      .locator('.message .text', { hasText: 'Stored through the first instance' })
      .waitFor({ timeout: LIVE_TIMEOUT_MS });
    assert.deepEqual(await messageTexts(page), ['Stored through the first instance']);
    await context.close();
  } finally {
    for (const { child } of instances) await stopServer(child);
    spawnSync('bash', [pgTmp, 'stop', cluster], { stdio: 'inherit' });
  }
});
