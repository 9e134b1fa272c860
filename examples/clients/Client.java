// kvio serve from Java 17 with java.net.http only: no build tool, no dependencies.
//
//   java Client.java URL STORE KEY [KEY...]
//   KVIO_TOKEN=...  the bearer token, if the server runs with --token-file
//
// Prints the store's version, the first key's value, a batch get of every key and a scan of
// up to 3 pairs from the first key, one "what key = value" line each. Keys and values are
// bytes: this client treats them as UTF-8 text, percent-encodes every byte in URLs and asks
// for base64 in JSON, which needs no JSON library to read.

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class Client {
    private static final HttpClient HTTP = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    private static final Pattern B64_OR_NULL = Pattern.compile("\"([A-Za-z0-9+/=]*)\"|null");
    private static final Pattern PAIR = Pattern.compile("\"key\":\"([A-Za-z0-9+/=]*)\",\"value\":\"([A-Za-z0-9+/=]*)\"");

    private final String base;
    private final String token;

    Client(String url, String store, String token) {
        this.base = url.replaceAll("/+$", "") + "/v1/stores/" + store;
        this.token = token;
    }

    /** Percent-encode every byte but the unreserved ones (RFC 3986): any key is a valid path. */
    static String pct(byte[] key) {
        StringBuilder out = new StringBuilder();
        for (byte b : key) {
            int c = b & 0xff;
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                    || c == '-' || c == '_' || c == '.' || c == '~') {
                out.append((char) c);
            } else {
                out.append(String.format("%%%02X", c));
            }
        }
        return out.toString();
    }

    private HttpRequest.Builder request(String path) {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path));
        if (token != null && !token.isEmpty()) {
            b.header("Authorization", "Bearer " + token);
        }
        return b;
    }

    private HttpResponse<byte[]> send(HttpRequest request) throws Exception {
        HttpResponse<byte[]> response = HTTP.send(request, HttpResponse.BodyHandlers.ofByteArray());
        if (response.statusCode() != 200 && response.statusCode() != 404) {
            throw new IllegalStateException("HTTP " + response.statusCode() + ": "
                    + new String(response.body(), StandardCharsets.UTF_8));
        }
        return response;
    }

    /** The version served now (the Kvio-Version header of the store's description). */
    String version() throws Exception {
        HttpResponse<byte[]> r = send(request("").GET().build());
        return r.headers().firstValue("Kvio-Version").orElseThrow();
    }

    /** One value, or null when the key is absent (404). */
    byte[] get(byte[] key) throws Exception {
        HttpResponse<byte[]> r = send(request("/keys/" + pct(key)).GET().build());
        return r.statusCode() == 404 ? null : r.body();
    }

    /** Many values from one version, in the order of the keys (null for absent ones). */
    List<byte[]> getMany(List<byte[]> keys) throws Exception {
        StringBuilder body = new StringBuilder("{\"encoding\":\"base64\",\"keys\":[");
        for (int i = 0; i < keys.size(); i++) {
            body.append(i == 0 ? "\"" : ",\"").append(Base64.getEncoder().encodeToString(keys.get(i))).append('"');
        }
        body.append("]}");
        HttpRequest req = request("/get").header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body.toString())).build();
        String json = new String(send(req).body(), StandardCharsets.UTF_8);
        // {"version":"...","values":[...]}: base64 strings and nulls, no escapes to handle
        Matcher m = B64_OR_NULL.matcher(json.substring(json.indexOf("\"values\":") + 9));
        List<byte[]> values = new ArrayList<>();
        while (m.find() && values.size() < keys.size()) {
            values.add(m.group(1) == null ? null : Base64.getDecoder().decode(m.group(1)));
        }
        return values;
    }

    /** Up to limit pairs from start on, in key order (NDJSON, base64). */
    List<byte[][]> scan(byte[] start, int limit) throws Exception {
        HttpResponse<byte[]> r = send(request("/scan?encoding=base64&limit=" + limit + "&start=" + pct(start)).GET().build());
        List<byte[][]> pairs = new ArrayList<>();
        for (String line : new String(r.body(), StandardCharsets.UTF_8).split("\n")) {
            Matcher m = PAIR.matcher(line);
            if (m.find()) {
                pairs.add(new byte[][] {Base64.getDecoder().decode(m.group(1)), Base64.getDecoder().decode(m.group(2))});
            }
        }
        return pairs;
    }

    static String text(byte[] value) {
        return value == null ? "(absent)" : new String(value, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: java Client.java URL STORE KEY [KEY...]");
            System.exit(2);
        }
        Client client = new Client(args[0], args[1], System.getenv("KVIO_TOKEN"));
        List<byte[]> keys = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            keys.add(args[i].getBytes(StandardCharsets.UTF_8));
        }
        StringBuilder lines = new StringBuilder();
        lines.append("version ").append(client.version()).append('\n');
        lines.append("get ").append(text(keys.get(0))).append(" = ").append(text(client.get(keys.get(0)))).append('\n');
        List<byte[]> values = client.getMany(keys);
        for (int i = 0; i < keys.size(); i++) {
            lines.append("batch ").append(text(keys.get(i))).append(" = ").append(text(values.get(i))).append('\n');
        }
        for (byte[][] pair : client.scan(keys.get(0), 3)) {
            lines.append("scan ").append(text(pair[0])).append(" = ").append(text(pair[1])).append('\n');
        }
        System.out.write(lines.toString().getBytes(StandardCharsets.UTF_8));
        System.out.flush();
    }
}
