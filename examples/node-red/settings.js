// Node-RED settings for the linelight example flow: loopback only, no editor login needed
// because nothing listens beyond 127.0.0.1. Run:
//   node-red --settings examples/node-red/settings.js --userDir /tmp/nr examples/node-red/flows.json
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: Number(process.env.LINELIGHT_NODE_RED_PORT || 1880),
    credentialSecret: false,
    flowFilePretty: true,
    logging: { console: { level: "info", metrics: false, audit: false } },
};
