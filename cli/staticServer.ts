// A small static file server for the browser demo and the browser tests: folders mounted at URL prefixes, HEAD and
// single HTTP range requests (206 + Content-Range, as the fetch ModelSource asks for checkpoint bytes), an ETag per
// file version, and a log of every request with the range it asked for (the range test reads it).
import { createReadStream, promises as fsp } from 'node:fs';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export interface ServedRequest {
  method: string;
  url: string;
  /** The Range header, when one was sent. */
  range?: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
}

export interface StaticServer {
  url: string;
  log: ServedRequest[];
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.css': 'text/css',
  '.png': 'image/png',
  '.ts': 'text/plain; charset=utf-8',
  '.jinja': 'text/plain; charset=utf-8',
};

/** Serves `mounts` (URL prefix such as '/' or '/model/' -> folder) on 127.0.0.1 at `port` (0: any free port). */
export async function serveStatic(mounts: Record<string, string>, port = 0): Promise<StaticServer> {
  const log: ServedRequest[] = [];
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const server = createServer((request, response) => {
    handle(request, response).catch(() => {
      if (!response.headersSent) response.writeHead(500);
      response.end();
    });
  });

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const entry: ServedRequest = { method: request.method ?? 'GET', url: url.pathname, status: 0, bytes: 0 };
    if (request.headers.range) entry.range = request.headers.range;
    log.push(entry);
    const send = (status: number, headers: Record<string, string | number> = {}) => {
      entry.status = status;
      response.writeHead(status, { 'Cache-Control': 'no-store', ...headers });
    };
    const prefix = prefixes.find((p) => url.pathname.startsWith(p));
    let pathname = decodeURIComponent(url.pathname);
    if (prefix === undefined || pathname.includes('\0')) return void (send(404), response.end());
    if (pathname.endsWith('/')) pathname += 'index.html';
    const folder = path.resolve(mounts[prefix]!);
    const file = path.resolve(folder, `.${pathname.slice(prefix.length - 1)}`);
    if (file !== folder && !file.startsWith(folder + path.sep)) return void (send(404), response.end());
    let stats;
    try {
      stats = await fsp.stat(file);
    } catch {
      return void (send(404), response.end());
    }
    if (!stats.isFile()) return void (send(404), response.end());
    const headers = {
      'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: `"${stats.size.toString(16)}-${Math.floor(stats.mtimeMs).toString(16)}"`,
    };
    let start = 0;
    let end = stats.size - 1;
    let status = 200;
    const range = request.headers.range ? /^bytes=(\d+)-(\d*)$/.exec(request.headers.range) : null;
    if (request.headers.range && !range) return void (send(416, { 'Content-Range': `bytes */${stats.size}` }), response.end());
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), stats.size - 1) : stats.size - 1;
      if (start > end) return void (send(416, { 'Content-Range': `bytes */${stats.size}` }), response.end());
      status = 206;
      Object.assign(headers, { 'Content-Range': `bytes ${start}-${end}/${stats.size}` });
    }
    const length = stats.size === 0 ? 0 : end - start + 1;
    send(status, { ...headers, 'Content-Length': length });
    if (request.method === 'HEAD' || length === 0) return void response.end();
    entry.bytes = length;
    createReadStream(file, { start, end }).pipe(response);
  }

  server.keepAliveTimeout = 60_000; // longer than a client's idle gaps, so a reused connection is not reset under it
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${bound}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
