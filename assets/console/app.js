// The console: a browser client of the public API (api.js), with no state of its own on
// the server. Text that came from the server is only ever set as textContent; the one
// exception, search snippets, is checked to hold no markup but <mark> first.

import { api, ApiError, userApi } from './api.js';

const PAGE = 100;
// Older pages load when the reader scrolls this close to the top.
const NEAR_TOP_PX = 120;
// How many pages a jump to a search hit may load before giving up on scrolling to it.
const MAX_JUMP_PAGES = 50;
// A refused events stream (too many open, server busy) is opened again after this long.
const RELISTEN_MS = 5_000;
// How long signing in waits for the events stream to open before reading anyway.
const OPEN_WAIT_MS = 3_000;

const SESSION_ENDED = 'Your session has ended. Sign in again.';

const $ = (id) => document.getElementById(id);

// The signed-in user's routes (api.js), null when signed out.
let server = null;
let events = null;
// The id of the last event seen, where a stream opened again resumes.
let lastEventId = '';
let chats = [];
// The open chat: its id, the ids shown (events and answers both deliver a message,
// so it is shown once by id), the cursor for older pages, and the page on its way.
let view = null;
// The search shown: its query, where its next page starts (null at the end), hits so far.
let search = null;

// ---- small helpers --------------------------------------------------------------------

function show(element, visible) {
  element.hidden = !visible;
}

/** Shows an error from the API (its message and each issue) or from the console itself.
 * A 401 while signed in means the session ended (expired, or signed out elsewhere). */
function showError(box, error) {
  if (server && error instanceof ApiError && error.status === 401) {
    signedOut(new Error(SESSION_ENDED));
    return;
  }
  box.replaceChildren();
  if (!error) return;
  const headline = document.createElement('p');
  headline.textContent = error.message;
  box.append(headline);
  if (error instanceof ApiError && error.issues.length > 0) {
    const list = document.createElement('ul');
    for (const issue of error.issues) {
      const item = document.createElement('li');
      const path = Array.isArray(issue.path) && issue.path.length ? `${issue.path.join('.')}: ` : '';
      item.textContent = `${path}${issue.message}`;
      list.append(item);
    }
    box.append(list);
  }
}

/** A confirmation or a name, asked in the page's dialog; resolves with null when cancelled. */
function ask({ title, text = '', input = null, ok = 'OK' }) {
  const dialog = $('dialog');
  $('dialog-title').textContent = title;
  $('dialog-text').textContent = text;
  $('dialog-ok').textContent = ok;
  show($('dialog-field'), input !== null);
  $('dialog-input').required = input !== null;
  $('dialog-input').value = input ?? '';
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        if (dialog.returnValue !== 'ok') resolve(null);
        else resolve(input === null ? true : $('dialog-input').value);
      },
      { once: true },
    );
  });
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

// ---- signing in and out ---------------------------------------------------------------

async function start() {
  try {
    const { user: current } = await api('GET', '/api/auth/session');
    await signedIn(current);
  } catch (error) {
    signedOut(error instanceof ApiError && error.status === 401 ? null : error);
  }
}

function signedOut(error = null) {
  events?.close();
  events = null;
  lastEventId = '';
  server = null;
  chats = [];
  closeChat();
  $('chats').replaceChildren();
  closeResults();
  show($('loading'), false);
  show($('workspace'), false);
  show($('account'), false);
  show($('auth'), true);
  showError($('auth-error'), error);
  $('password').value = '';
  $('email').focus();
}

async function signedIn(user) {
  server = userApi(user.id);
  $('who').textContent = user.primary_email ?? user.id;
  $('export').href = server.exportUrl;
  show($('loading'), false);
  show($('auth'), false);
  show($('account'), true);
  show($('workspace'), true);
  // A stream's starting point is fixed by the time it opens, so reading after that
  // misses nothing committed in between.
  await listen();
  await loadChats();
  // Keyboard users start where they most likely go next: their newest chat, or a new one.
  (document.querySelector('.chat-link') ?? $('new-chat-name')).focus();
}

$('auth-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const route = event.submitter?.value === 'sign-up' ? 'sign-up' : 'login';
  const body = { email: $('email').value, password: $('password').value };
  showError($('auth-error'), null);
  try {
    const { user: current } = await api('POST', `/api/auth/${route}`, body);
    await signedIn(current);
  } catch (error) {
    showError($('auth-error'), error);
  }
});

$('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/api/auth/logout');
  } catch {
    // The cookie is cleared or the session is gone either way.
  }
  signedOut();
});

// ---- live events ----------------------------------------------------------------------

/** Opens the user's events stream; resolves once it is open (or after OPEN_WAIT_MS). */
function listen() {
  events?.close();
  // EventSource reconnects by itself with Last-Event-ID, so a restarted server replays
  // what was missed; a stream opened anew resumes the same way with `after`. Messages
  // already shown are skipped by id when they come again.
  const resume = lastEventId ? `?after=${encodeURIComponent(lastEventId)}` : '';
  const stream = new EventSource(`${server.eventsUrl}${resume}`);
  events = stream;
  const on = (kind, handle) =>
    stream.addEventListener(kind, (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      try {
        handle(JSON.parse(event.data));
      } catch (error) {
        console.error(`${kind} event`, error);
      }
    });
  on('message', ({ message }) => {
    touchChat(message.chat_conversation_id, message.created_at);
    if (view?.chatId === message.chat_conversation_id) addMessages([message]);
  });
  on('messages_deleted', ({ chat_id: chatId, ids }) => {
    if (view?.chatId === chatId) removeMessages(ids);
  });
  on('chat_created', ({ chat }) => upsertChat(chat));
  on('chat_renamed', ({ chat }) => upsertChat(chat));
  on('chat_deleted', ({ chat_id: chatId }) => forgetChats([chatId]));
  on('reset', () => reloadEverything());
  stream.addEventListener('error', async () => {
    // EventSource retries a cut stream by itself, but gives up on a refused one: the
    // session ended (then sign in again), or too many streams are open (try later).
    if (stream !== events || stream.readyState !== EventSource.CLOSED) return;
    try {
      await api('GET', '/api/auth/session');
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        signedOut(new Error(SESSION_ENDED));
        return;
      }
    }
    setTimeout(() => {
      if (stream === events) listen();
    }, RELISTEN_MS);
  });
  return new Promise((resolve) => {
    stream.addEventListener('open', resolve, { once: true });
    setTimeout(resolve, OPEN_WAIT_MS);
  });
}

async function reloadEverything() {
  const open = view?.chatId;
  await loadChats();
  if (open !== undefined && chats.some((chat) => chat.id === open)) await openChat(open);
}

// ---- the chat list --------------------------------------------------------------------

async function loadChats() {
  try {
    const answer = await server.listChats($('order').value);
    chats = answer.chats;
    renderChats();
  } catch (error) {
    showError($('new-chat-error'), error);
  }
}

function compareChats(a, b) {
  const [field, direction] = $('order').value.split(':');
  const sign = direction === 'asc' ? 1 : -1;
  const left = a[field];
  const right = b[field];
  const order = field === 'name' ? left.localeCompare(right) : left < right ? -1 : left > right ? 1 : 0;
  return sign * order || sign * (a.id - b.id);
}

function renderChats() {
  chats.sort(compareChats);
  // The list is rebuilt on every change, live ones included: the focus goes back to the
  // same control, so that a keyboard user is not thrown to the top of the page.
  const active = document.activeElement;
  const focused = $('chats').contains(active) ? [active.className, active.dataset.chatId] : null;
  const items = chats.map((chat) => {
    const item = document.createElement('li');
    const select = document.createElement('input');
    select.type = 'checkbox';
    select.className = 'select-chat';
    select.value = String(chat.id);
    select.dataset.chatId = String(chat.id);
    select.setAttribute('aria-label', `Select ${chat.name}`);
    select.addEventListener('change', updateSelection);
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'chat-link';
    open.dataset.chatId = String(chat.id);
    const name = document.createElement('span');
    name.className = 'chat-name';
    name.textContent = chat.name;
    const when = document.createElement('time');
    when.dateTime = chat.updated_at;
    when.textContent = formatTime(chat.updated_at);
    open.append(name, when);
    if (view?.chatId === chat.id) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => openChat(chat.id));
    item.append(select, open);
    return item;
  });
  const selected = new Set(
    [...document.querySelectorAll('.select-chat:checked')].map((box) => box.value),
  );
  $('chats').replaceChildren(...items);
  for (const box of document.querySelectorAll('.select-chat')) box.checked = selected.has(box.value);
  show($('no-chats'), chats.length === 0);
  updateSelection();
  if (focused) {
    const [className, chatId] = focused;
    $('chats').querySelector(`.${className}[data-chat-id="${Number(chatId)}"]`)?.focus();
  }
}

function updateSelection() {
  const count = document.querySelectorAll('.select-chat:checked').length;
  $('delete-selected').textContent = `Delete selected (${count})`;
  show($('delete-selected'), count > 0);
}

function upsertChat(chat) {
  chats = chats.filter((known) => known.id !== chat.id).concat([chat]);
  renderChats();
  if (view?.chatId === chat.id) $('chat-title').textContent = chat.name;
}

function touchChat(chatId, time) {
  const chat = chats.find((known) => known.id === chatId);
  if (!chat || chat.updated_at >= time) return;
  chat.updated_at = time;
  renderChats();
}

function forgetChats(ids) {
  chats = chats.filter((chat) => !ids.includes(chat.id));
  renderChats();
  if (view && ids.includes(view.chatId)) closeChat();
}

$('order').addEventListener('change', loadChats);

$('new-chat').addEventListener('submit', async (event) => {
  event.preventDefault();
  showError($('new-chat-error'), null);
  try {
    const { chat } = await server.createChat($('new-chat-name').value, $('new-chat-model').value);
    $('new-chat-name').value = '';
    upsertChat(chat);
    // The composer shows at once; its focus need not wait for the messages.
    const opened = openChat(chat.id);
    $('text').focus();
    await opened;
  } catch (error) {
    showError($('new-chat-error'), error);
  }
});

$('delete-selected').addEventListener('click', async () => {
  const ids = [...document.querySelectorAll('.select-chat:checked')].map((box) => Number(box.value));
  const confirmed = await ask({
    title: `Delete ${ids.length} chat${ids.length === 1 ? '' : 's'}?`,
    text: 'Their messages are deleted with them. This cannot be undone.',
    ok: 'Delete',
  });
  if (!confirmed) return;
  try {
    const { deleted } = await server.deleteChats(ids);
    forgetChats(deleted);
  } catch (error) {
    showError($('new-chat-error'), error);
  }
});

// ---- the open chat --------------------------------------------------------------------

function closeChat() {
  view = null;
  $('message-list').replaceChildren();
  show($('chat-view'), false);
  show($('no-chat'), true);
  for (const link of document.querySelectorAll('.chat-link')) link.removeAttribute('aria-current');
}

async function openChat(chatId) {
  const chat = chats.find((known) => known.id === chatId);
  if (!chat) return;
  view = { chatId, ids: new Set(), before: null, more: true, loading: null };
  $('chat-title').textContent = chat.name;
  $('chat-model').textContent = chat.model;
  $('message-list').replaceChildren();
  showError($('composer-error'), null);
  show($('no-chat'), false);
  show($('chat-view'), true);
  for (const link of document.querySelectorAll('.chat-link')) {
    if (link.dataset.chatId === String(chatId)) link.setAttribute('aria-current', 'true');
    else link.removeAttribute('aria-current');
  }
  await loadOlder();
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
}

/** Loads the page before the oldest message shown, keeping what the reader sees in place;
 * a call while a page is on its way waits for that page instead of asking twice. */
function loadOlder() {
  const current = view;
  if (!current || !current.more) return Promise.resolve();
  current.loading ??= loadPage(current).finally(() => {
    current.loading = null;
  });
  return current.loading;
}

async function loadPage(current) {
  const box = $('messages');
  box.setAttribute('aria-busy', 'true');
  try {
    const page = await server.olderMessages(current.chatId, current.before, PAGE);
    if (view !== current) return;
    const fromBottom = box.scrollHeight - box.scrollTop;
    addMessages(page.chatMessages);
    current.before = page.next;
    current.more = page.next !== null;
    box.scrollTop = box.scrollHeight - fromBottom;
  } catch (error) {
    if (view === current) showError($('composer-error'), error);
  } finally {
    box.removeAttribute('aria-busy');
    if (view === current) show($('older'), current.more);
  }
}

function renderMessage(message) {
  const item = document.createElement('li');
  item.className = `message role-${message.actor}`;
  item.dataset.id = String(message.id);
  const meta = document.createElement('div');
  meta.className = 'meta';
  const role = document.createElement('span');
  role.className = 'role';
  role.textContent = message.actor;
  const when = document.createElement('time');
  when.dateTime = message.created_at;
  when.textContent = formatTime(message.created_at);
  meta.append(role, ' ', when);
  const text = document.createElement('p');
  text.className = 'text';
  text.textContent = message.message;
  item.append(meta, text);
  return item;
}

/** Shows messages of the open chat in id order, each once, wherever they came from. */
function addMessages(messages) {
  const list = $('message-list');
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  let appended = false;
  for (const message of messages) {
    if (view.ids.has(message.id)) continue;
    view.ids.add(message.id);
    const item = renderMessage(message);
    let next = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.id) < message.id) break;
      next = node;
    }
    list.insertBefore(item, next);
    if (next === null) appended = true;
  }
  if (appended && atBottom) box.scrollTop = box.scrollHeight;
}

function removeMessages(ids) {
  for (const id of ids) {
    view.ids.delete(id);
    $('message-list').querySelector(`[data-id="${Number(id)}"]`)?.remove();
  }
}

$('messages').addEventListener('scroll', () => {
  if ($('messages').scrollTop < NEAR_TOP_PX) loadOlder();
});
$('older').addEventListener('click', loadOlder);

$('rename').addEventListener('click', async () => {
  const chat = chats.find((known) => known.id === view?.chatId);
  if (!chat) return;
  const name = await ask({ title: 'Rename chat', input: chat.name, ok: 'Rename' });
  if (name === null) return;
  try {
    upsertChat((await server.renameChat(chat.id, name)).chat);
  } catch (error) {
    showError($('composer-error'), error);
  }
});

$('delete-chat').addEventListener('click', async () => {
  const chat = chats.find((known) => known.id === view?.chatId);
  if (!chat) return;
  const confirmed = await ask({
    title: `Delete “${chat.name}”?`,
    text: 'Its messages are deleted with it. This cannot be undone.',
    ok: 'Delete',
  });
  if (!confirmed) return;
  try {
    forgetChats((await server.deleteChats([chat.id])).deleted);
  } catch (error) {
    showError($('composer-error'), error);
  }
});

$('delete-last').addEventListener('click', async () => {
  const chatId = view?.chatId;
  if (chatId === undefined) return;
  const confirmed = await ask({
    title: 'Delete the last turn?',
    text: 'The last answer and the messages it answered are deleted.',
    ok: 'Delete',
  });
  if (!confirmed) return;
  try {
    const { deleted } = await server.deleteLastTurn(chatId);
    if (view?.chatId === chatId) removeMessages(deleted);
  } catch (error) {
    showError($('composer-error'), error);
  }
});

// ---- the composer ---------------------------------------------------------------------

/** The batch typed into the composer: a JSON array of strings (sent with the chosen role) or of {content, role}. */
function parseBatch(text, role) {
  let items;
  try {
    items = JSON.parse(text);
  } catch (error) {
    throw new Error(`The batch is not JSON: ${error.message}`);
  }
  if (!Array.isArray(items)) throw new Error('A batch is a JSON array.');
  return items.map((item) => (typeof item === 'string' ? { content: item, role } : item));
}

$('batch').addEventListener('change', () => {
  const batch = $('batch').checked;
  $('text-label').textContent = batch ? 'Messages (JSON array)' : 'Message';
  $('text').rows = batch ? 8 : 3;
  $('text').placeholder = batch ? '[{"content": "Hello", "role": "user"}, "more text in the chosen role"]' : '';
});

$('composer').addEventListener('submit', async (event) => {
  event.preventDefault();
  const chatId = view?.chatId;
  if (chatId === undefined) return;
  const text = $('text').value;
  const role = $('role').value;
  showError($('composer-error'), null);
  try {
    const messages = $('batch').checked
      ? (await server.postBatch(chatId, parseBatch(text, role))).chatMessages
      : [(await server.postMessage(chatId, text, role)).chatMessage];
    $('text').value = '';
    if (view?.chatId === chatId) {
      addMessages(messages);
      $('messages').scrollTop = $('messages').scrollHeight;
    }
    touchChat(chatId, messages[messages.length - 1].created_at);
  } catch (error) {
    showError($('composer-error'), error);
  }
});

$('text').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
});

// ---- search ---------------------------------------------------------------------------

/** The snippet as nodes: its text with <mark> around the matches. Anything else in it is
 * not trusted as markup, and the hit is shown as its plain message text instead. */
function snippetNodes(snippet, fallback) {
  const parts = snippet.split(/(<mark>|<\/mark>)/);
  if (parts.some((part) => part !== '<mark>' && part !== '</mark>' && part.includes('<'))) {
    return [document.createTextNode(fallback)];
  }
  const template = document.createElement('template');
  template.innerHTML = snippet;
  return [...template.content.childNodes];
}

function closeResults() {
  search = null;
  $('results-list').replaceChildren();
  show($('results'), false);
}

$('results-close').addEventListener('click', closeResults);

$('search').addEventListener('submit', async (event) => {
  event.preventDefault();
  search = { q: $('search-q').value, cursor: null, count: 0 };
  $('results-list').replaceChildren();
  await searchPage();
});

$('results-more').addEventListener('click', searchPage);

async function searchPage() {
  const current = search;
  showError($('search-error'), null);
  try {
    const { results, next_cursor: next } = await server.search(current.q, current.cursor);
    if (search !== current) return;
    const items = results.map((hit) => {
      const item = document.createElement('li');
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'hit';
      const chatName = document.createElement('span');
      chatName.className = 'chat-name';
      chatName.textContent = hit.chat.name;
      const snippet = document.createElement('span');
      snippet.className = 'snippet';
      snippet.append(...snippetNodes(hit.snippet, hit.message.message));
      open.append(chatName, snippet);
      open.addEventListener('click', () => jumpTo(hit.chat.id, hit.message.id));
      item.append(open);
      return item;
    });
    current.cursor = next;
    current.count += results.length;
    const more = next ? ' so far' : '';
    $('results-title').textContent = `${current.count} result${current.count === 1 ? '' : 's'}${more}`;
    $('results-list').append(...items);
    show($('results-more'), next !== null);
    show($('results'), true);
  } catch (error) {
    showError($('search-error'), error);
  }
}

/** Opens a chat and scrolls to one of its messages, loading older pages until it is there. */
async function jumpTo(chatId, messageId) {
  if (view?.chatId !== chatId) await openChat(chatId);
  for (let pages = 0; view?.chatId === chatId && !view.ids.has(messageId) && view.more; pages += 1) {
    const shown = view.ids.size;
    if (pages === MAX_JUMP_PAGES) return;
    await loadOlder();
    // A page that failed (its error is shown) is not asked for again and again.
    if (view?.ids.size === shown) return;
  }
  const item = $('message-list').querySelector(`[data-id="${Number(messageId)}"]`);
  if (!item) return;
  for (const old of document.querySelectorAll('.message.found')) old.classList.remove('found');
  item.classList.add('found');
  item.tabIndex = -1;
  item.scrollIntoView({ block: 'center' });
  item.focus({ preventScroll: true });
}

start();
