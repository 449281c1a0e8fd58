// A plain Node socket.io hub, for the load tool: warden's relay behaviour
// (connection_ack on connect; a claude_event is stamped with server_id and
// received_at and sent to every other client) and a GET /status for the load
// tool's probe. No reliability layer.
//
//     npm ci --prefix bench/hubs
//     node bench/hubs/node_hub.js --port 8765
const http = require("http");
const { Server } = require("socket.io");

const argv = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : fallback;
};
const host = arg("--host", "127.0.0.1");
const port = Number(arg("--port", "8765"));
const serverId = `node-hub-${port}`;

const httpServer = http.createServer((req, res) => {
  if (req.url === "/status") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "running", clients: io.engine.clientsCount }));
  } else {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(httpServer, { maxHttpBufferSize: 1e6 });

io.on("connection", (socket) => {
  socket.emit("connection_ack", {
    server_id: serverId,
    sid: socket.id,
    timestamp: new Date().toISOString(),
  });
  socket.on("claude_event", (data) => {
    const event =
      data !== null && typeof data === "object" && !Array.isArray(data) ? { ...data } : { data };
    event.server_id = serverId;
    event.received_at = new Date().toISOString();
    socket.broadcast.emit("claude_event", event);
  });
});

process.on("SIGTERM", () => {
  io.close();
  process.exit(0);
});
httpServer.listen(port, host);
