// The console's only way to the server: the public JSON API, with the session cookie
// the browser keeps. Nothing here touches the page.

/** An answer other than 2xx, carrying the API's envelope: `message` and `data.issues`. */
export class ApiError extends Error {
  constructor(status, envelope) {
    super(envelope?.message ?? `The server answered ${status}.`);
    this.status = status;
    this.issues = Array.isArray(envelope?.data?.issues) ? envelope.data.issues : [];
  }
}

/** Sends a JSON request and resolves with the parsed answer, or rejects with an ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { message: 'The server cannot be reached.' });
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // A proxy's HTML error page: the status alone says what happened.
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

// Larger than any message id, so that `before` it is the chat's newest page.
const NEWEST = '9223372036854775807';

/** The paths of one user's resources. */
export function userApi(userId) {
  const base = `/api/users/${encodeURIComponent(userId)}`;
  const chat = (id) => `${base}/chats/${encodeURIComponent(id)}`;
  return {
    exportUrl: `${base}/export`,
    eventsUrl: `${base}/events`,
    listChats: (order) => api('GET', `${base}/chats?order_by=${encodeURIComponent(order)}`),
    createChat: (name, model) => api('POST', `${base}/chats`, { name, model }),
    renameChat: (id, name) => api('PATCH', chat(id), { name }),
    deleteChats: (ids) => api('DELETE', `${base}/chats`, { chat_ids: ids }),
    /** One page of messages, oldest first, with ids below `before` (the newest page without it). */
    olderMessages: (id, before, limit) =>
      api('GET', `${chat(id)}/messages?limit=${limit}&before=${before ?? NEWEST}`),
    postMessage: (id, message, actor) => api('POST', `${chat(id)}/messages`, { message, actor }),
    postBatch: (id, messages) => api('POST', `${chat(id)}/messages`, { messages }),
    deleteLastTurn: (id) => api('DELETE', `${chat(id)}/messages/last`),
    /** One page of hits; `cursor` is the `next_cursor` of the page before. */
    search: (q, cursor) =>
      api('GET', `${base}/search?q=${encodeURIComponent(q)}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`),
  };
}
