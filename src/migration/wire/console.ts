/**
 * CONSOLE (0x18, source → destination, since protocol 1.7, needs the console-precopy
 * capability): a piece of the VM's console history, sent while the VM runs. The first frame
 * carries what the source keeps (up to 1 MiB); each later one what the guest printed since the
 * frame before. The machine state saved at the pause then carries only the console bytes after
 * the last frame, and the destination joins the two (ConsoleLog.join).
 *
 * end u64 | bytes (the rest of the payload, at most 1 MiB)
 *
 * `end` counts every byte the guest printed up to and including the last of `bytes`, so the
 * frame holds bytes [end − length, end) of the guest's whole output.
 */
import { CONSOLE_FIXED_BYTES, FrameType, MAX_CONSOLE_BYTES } from './constants.js';
import { FrameWriter, PayloadReader, checkU64 } from './bytes.js';
import { WireError } from './errors.js';
import type { ConsoleHistory } from './messages.js';

const MESSAGE = 'CONSOLE';

export function encodeConsole(m: { readonly end: number; readonly bytes: Uint8Array }): Uint8Array {
  checkU64(MESSAGE, 'end', m.end);
  if (m.bytes.length > MAX_CONSOLE_BYTES) throw new WireError('oversized', `${m.bytes.length} bytes of history exceed ${MAX_CONSOLE_BYTES}`, { message: MESSAGE, field: 'bytes' });
  if (m.end < m.bytes.length) throw new WireError('bad-value', `end ${m.end} is before the start of ${m.bytes.length} bytes`, { message: MESSAGE, field: 'end' });
  return new FrameWriter(FrameType.Console, CONSOLE_FIXED_BYTES + m.bytes.length).u64(m.end).raw(m.bytes).finish();
}

/** `bytes` is a view into the payload. */
export function decodeConsole(payload: Uint8Array): ConsoleHistory {
  const r = new PayloadReader(payload, MESSAGE);
  const end = r.u64('end');
  const length = r.remaining;
  if (length > MAX_CONSOLE_BYTES) r.fail('oversized', 'bytes', `${length} bytes of history exceed ${MAX_CONSOLE_BYTES}`);
  if (end < length) r.fail('bad-value', 'end', `end ${end} is before the start of ${length} bytes`);
  const bytes = r.counted(length, 'bytes');
  r.end();
  return { type: FrameType.Console, end, bytes };
}
