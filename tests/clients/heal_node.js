// A stock socket.io-client (4.8.1, default options: its usual reconnection
// backoff) for tests/client_healing.rs: connects to argv[2] and reports, one
// JSON line each on stdout, every connect, disconnect (with socket.io's
// reason) and claude_event. Exits when stdin closes. With argv[3] "polling",
// it never upgrades to a WebSocket.
const { io } = require("socket.io-client");

const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const options = process.argv[3] === "polling" ? { transports: ["polling"] } : {};
const socket = io(process.argv[2], options);
socket.on("connect", () => out({ ev: "connect", id: socket.id }));
socket.on("disconnect", (reason) => out({ ev: "disconnect", reason }));
socket.on("connect_error", (error) => out({ ev: "connect_error", reason: error.message }));
socket.on("claude_event", (data) => out({ ev: "event", data }));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
