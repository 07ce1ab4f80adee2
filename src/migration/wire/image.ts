/**
 * IMAGE (0x15, source → destination, since protocol 1.2, needs the warm-image capability): the
 * guest image the VM booted from, sent once after ACCEPT and before any page, so the destination
 * can run the same guest code on its standby vCPU thread while pre-copy goes on.
 *
 * sha256 32 | imageLength u32 | image
 */
import { FrameType, IMAGE_FIXED_BYTES, MAX_IMAGE_BYTES } from './constants.js';
import { FrameWriter, PayloadReader } from './bytes.js';
import { readDigestedBlob } from './control.js';
import { WireError } from './errors.js';
import { sha256 } from './ids.js';
import type { Image } from './messages.js';

/** The digest is computed here. */
export function encodeImage(m: { readonly image: Uint8Array }): Uint8Array {
  if (m.image.length === 0) throw new WireError('bad-value', 'the image is empty', { message: 'IMAGE', field: 'imageLength' });
  if (m.image.length > MAX_IMAGE_BYTES) throw new WireError('oversized', `${m.image.length} bytes exceed ${MAX_IMAGE_BYTES}`, { message: 'IMAGE', field: 'imageLength' });
  return new FrameWriter(FrameType.Image, IMAGE_FIXED_BYTES + m.image.length).raw(sha256(m.image)).u32(m.image.length).raw(m.image).finish();
}

/** Verifies the digest; `image` is a view into the payload. */
export function decodeImage(payload: Uint8Array): Image {
  const { blob, digest } = readDigestedBlob(new PayloadReader(payload, 'IMAGE'), 'image', 'an image', MAX_IMAGE_BYTES);
  return { type: FrameType.Image, image: blob, digest };
}
