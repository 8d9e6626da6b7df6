/** Echo: what arrives on echo/<id>/in goes back, unchanged, on echo/<id>/out. */
import type { Task } from 'edge-coordinator';

export default {
  async onEvent(event, ctx) {
    if (event.type === 'message') {
      const id = event.topic.split('/')[1]!;
      await ctx.publish(`echo/${id}/out`, event.payloadBase64 === undefined ? event.text : Uint8Array.from(atob(event.payloadBase64), (c) => c.charCodeAt(0)));
    }
    return null;
  },
} satisfies Task;
