// A stock socket.io-client 4.x dashboard for the connection state recovery
// tests (tests/connection_state_recovery.rs): it records the `seq` of every
// claude_event it gets and `socket.recovered` at every connect, and prints
// one JSON line per connect and a final line once it gets the event with
// `last: true`.
//
// Usage: node csr_client.js <url> [options as JSON]
//   resumeAfterServerDisconnect: reconnect by hand after "io server
//     disconnect" (socket.io-client does not on its own; the pid is kept)
//   catchUp: after a connect that did not recover, ask get_history {since}
//     from the last event id received, and record what it answers
//   progress: print {"type":"seq","seq":n} for every event received
//   authPid: send this pid in the first CONNECT's auth (a made-up session)
const { io } = require("socket.io-client");

const url = process.argv[2];
const options = JSON.parse(process.argv[3] || "{}");
const socket = io(url, {
  // authPid: a made-up session id sent with the first CONNECT.
  auth: options.authPid ? { pid: options.authPid } : undefined,
  transports: ["websocket"],
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
  randomizationFactor: 0,
});

const seqs = [];
const connects = [];
const histories = [];
let lastId = null;
let badOffsets = 0;

function line(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

function record(event) {
  seqs.push(event.seq);
  if (options.progress) line({ type: "seq", seq: event.seq });
  lastId = event.event_id;
  if (event.last) {
    line({ type: "done", seqs, connects, histories, badOffsets, offsetsOutOfOrder });
    socket.disconnect();
    process.exit(0);
  }
}

socket.on("connect", () => {
  connects.push({ recovered: socket.recovered });
  line({ type: "connect", recovered: socket.recovered, count: connects.length });
  if (!socket.recovered && lastId !== null && options.catchUp) {
    socket.emit("get_history", { since: lastId });
  }
});

// Offsets must come in increasing order (`<epoch>-<n>`: n counts up).
let lastOffsetSeq = 0;
let offsetsOutOfOrder = 0;

socket.on("claude_event", (event, offset) => {
  // With recovery on, the offset is the last argument and equals the id.
  if (offset !== event.event_id) badOffsets += 1;
  if (typeof offset === "string") {
    const n = Number(offset.split("-").pop());
    if (n <= lastOffsetSeq) offsetsOutOfOrder += 1;
    lastOffsetSeq = n;
  }
  record(event);
});

socket.on("event_history", (answer) => {
  histories.push({ count: answer.count, more: answer.more, gap: answer.gap || null });
  line({ type: "history", count: answer.count, more: answer.more, gap: answer.gap || null });
  for (const event of answer.events) record(event);
});

socket.on("disconnect", (reason) => {
  line({ type: "disconnect", reason });
  if (reason === "io server disconnect" && options.resumeAfterServerDisconnect) {
    setTimeout(() => socket.connect(), 100);
  }
});

setTimeout(() => {
  line({ type: "timeout", seqs, connects, histories, badOffsets });
  process.exit(2);
}, Number(options.timeoutMs || 90000));
