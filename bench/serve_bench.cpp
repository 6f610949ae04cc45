// weir-serve-bench: HTTP ingest with durable acknowledgements and query latency of `weir serve`
// (bench/README.md). Starts `weir serve` on loopback with an http source, has N clients POST
// bodies of ndjson lines, and reports acknowledged events/s, POST latency, the time until the
// pipeline committed every event, then keyed-lookup latency and full-scan rows/s of the results.

#include <fcntl.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

/// The value of the sample `series` in Prometheus text, or -1.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.compare(0, series.size() + 1, series + " ") == 0)
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  return -1;
}

std::string iso(int64_t s) {
  std::time_t t = static_cast<std::time_t>(s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"weir-serve-bench: HTTP ingest and query latency of weir serve"};
  std::string weir_bin = WEIR_BINARY;
  int clients = 4;
  int bodies = 250;
  int lines = 1000;
  int keys = 300;
  int lookups = 2000;
  int64_t span = 0;
  bool key_index = true;
  std::string dir;
  bool durable = true;
  std::string protocol = "http";
  app.add_option("--protocol", protocol, "http (POST bodies) or tcp (the plain TCP ingest)")
    ->check(CLI::IsMember({"http", "tcp"}))
    ->capture_default_str();
  app.add_option("--weir", weir_bin, "the weir binary")->capture_default_str();
  app.add_option("--clients", clients, "clients posting at once")->capture_default_str();
  app.add_option("--bodies", bodies, "bodies each client posts")->capture_default_str();
  app.add_option("--lines", lines, "events per body")->capture_default_str();
  app.add_option("--keys", keys, "distinct keys")->capture_default_str();
  app.add_option("--lookups", lookups, "keyed result lookups timed after the ingest")
    ->capture_default_str();
  app.add_option("--span", span,
                 "seconds each client's events cover (default: lines * bodies / 100; more "
                 "spreads them over more windows)");
  app.add_option("--key-index", key_index,
                 "keep the pipeline's key index ([pipeline.results] key_index, true/false)")
    ->capture_default_str();
  app.add_option("--dir", dir, "work directory (default: a new temporary one, removed)");
  app.add_option("--durable", durable, "fsync each landed body and commit (true/false)")
    ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const bool temp = dir.empty();
  if (temp)
    dir = (fs::temp_directory_path() / ("weir-serve-bench-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  {
    std::ofstream cfg{dir + "/serve.toml"};
    cfg << "store = \"store\"\ndurable = " << (durable ? "true" : "false")
        << "\n\n[[pipeline]]\nname = \"bench\"\n\n  [[pipeline.source]]\n  name = \"api\"\n"
           "  http = true\n  format = \"ndjson\"\n\n  [pipeline.fields]\n  time = \"ts\"\n"
           "  key = [\"k\"]\n  measures = [\"amount\"]\n\n  [pipeline.window]\n"
           "  kind = \"tumbling\"\n  size = \"1m\"\n  out_of_orderness = \"10m\"\n\n"
           "  [[pipeline.aggregate]]\n  fn = \"count\"\n  [[pipeline.aggregate]]\n"
           "  fn = \"sum\"\n  field = \"amount\"\n\n  [pipeline.results]\n  key_index = "
        << (key_index ? "true" : "false") << "\n";
  }
  // weir serve, its stdout through a pipe to learn the port.
  int out[2];
  if (::pipe(out) != 0)
    return 1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    int err = ::open((dir + "/serve.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0)
      ::dup2(err, 2);
    ::close(out[0]);
    std::string cfg = dir + "/serve.toml";
    ::execl(weir_bin.c_str(), weir_bin.c_str(), "serve", cfg.c_str(), "--listen", "127.0.0.1:0",
            "--tcp", "127.0.0.1:0", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  // "weir serve: tcp ingest on HOST:PORT", then "weir serve: listening on http://HOST:PORT".
  int tcp_port = 0;
  int port = 0;
  for (int i = 0; i < 2; ++i) {
    std::string line;
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n')
      line += c;
    std::smatch m;
    if (!std::regex_search(line, m, std::regex{":([0-9]+)$"})) {
      std::fprintf(stderr, "weir serve did not start: %s (see %s/serve.log)\n", line.c_str(),
                   dir.c_str());
      return 1;
    }
    (line.find("tcp ingest") != std::string::npos ? tcp_port : port) = std::stoi(m[1]);
  }
  httplib::Client probe{"127.0.0.1", port};
  for (int i = 0; i < 500; ++i) {
    auto r = probe.Get("/ready");
    if (r && r->status == 200)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  // Bodies made before the clock starts: client c, body b, line i has event time
  // t0 + (b * lines + i) * span / (bodies * lines) seconds (span: 1/100 s a line by default),
  // so that the clients' times interleave within minutes.
  const int64_t per_client = static_cast<int64_t>(bodies) * lines;
  if (span <= 0)
    span = per_client / 100;
  const int64_t t0 = 1717200000;
  std::vector<std::vector<std::string>> made(static_cast<size_t>(clients));
  std::mt19937_64 rng{42};
  for (int cl = 0; cl < clients; ++cl)
    for (int b = 0; b < bodies; ++b) {
      std::string body;
      body.reserve(static_cast<size_t>(lines) * 64);
      for (int i = 0; i < lines; ++i) {
        const int64_t t = t0 + (static_cast<int64_t>(b) * lines + i) * span / per_client;
        body += "{\"ts\":\"" + iso(t) + "\",\"k\":\"k" + std::to_string(rng() % keys) +
                "\",\"amount\":" + std::to_string(rng() % 1000) + "}\n";
      }
      made[static_cast<size_t>(cl)].push_back(std::move(body));
    }
  std::vector<std::vector<double>> latency(static_cast<size_t>(clients));
  std::atomic<long> refused{0};
  std::atomic<long> retried{0};
  const auto start = clock_type::now();
  std::vector<std::thread> threads;
  for (int cl = 0; cl < clients && protocol == "tcp"; ++cl)
    threads.emplace_back([&, cl] {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in at{};
      at.sin_family = AF_INET;
      at.sin_port = htons(static_cast<uint16_t>(tcp_port));
      at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      std::string in;
      auto line = [&]() {
        char b[256];
        for (;;) {
          auto nl = in.find('\n');
          if (nl != std::string::npos) {
            auto l = in.substr(0, nl);
            in.erase(0, nl + 1);
            return l;
          }
          ssize_t n = ::recv(fd, b, sizeof b, 0);
          if (n <= 0)
            return std::string{};
          in.append(b, static_cast<size_t>(n));
        }
      };
      auto send_all = [&](const std::string& s) {
        for (size_t done = 0; done < s.size();) {
          ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
          if (n <= 0)
            return false;
          done += static_cast<size_t>(n);
        }
        return true;
      };
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
          !send_all("weir-ingest 1 bench\n") || line() != "ok weir-ingest 1") {
        refused += static_cast<long>(made[static_cast<size_t>(cl)].size());
        ::close(fd);
        return;
      }
      for (auto& body : made[static_cast<size_t>(cl)]) {
        body += '\n'; // the empty line that ends the batch, in the same send
        const auto t = clock_type::now();
        if (!send_all(body) || line().rfind("ok ", 0) != 0)
          ++refused;
        latency[static_cast<size_t>(cl)].push_back(seconds_since(t) * 1e3);
      }
      ::close(fd);
    });
  for (int cl = 0; cl < clients && protocol == "http"; ++cl)
    threads.emplace_back([&, cl] {
      httplib::Client http{"127.0.0.1", port};
      http.set_read_timeout(60, 0);
      for (const auto& body : made[static_cast<size_t>(cl)]) {
        for (;;) {
          const auto t = clock_type::now();
          auto r = http.Post("/v1/pipelines/bench/events", body, "application/x-ndjson");
          if (r && r->status == 429) { // slowed down: wait as told, send again
            ++retried;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            continue;
          }
          if (!r || r->status != 200)
            ++refused;
          latency[static_cast<size_t>(cl)].push_back(seconds_since(t) * 1e3);
          break;
        }
      }
    });
  for (auto& t : threads)
    t.join();
  const double acked_s = seconds_since(start);
  const long total = static_cast<long>(clients) * bodies * lines;
  // Until the pipeline committed them all.
  double committed_s = -1;
  for (int i = 0; i < 30000; ++i) {
    auto r = probe.Get("/metrics");
    if (r && sample(r->body, "weir_events_read_total{pipeline=\"bench\"}") >= total) {
      committed_s = seconds_since(start);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<double> all;
  for (auto& v : latency)
    all.insert(all.end(), v.begin(), v.end());
  std::printf("%s ingest: %d clients x %d batches x %d lines = %ld events, durable=%s\n",
              protocol.c_str(), clients, bodies, lines, total, durable ? "true" : "false");
  std::printf("  acknowledged      %.2f s   %.0f events/s   (refused %ld, 429-retried %ld)\n",
              acked_s, static_cast<double>(total) / acked_s, refused.load(), retried.load());
  std::printf("  ack latency       p50 %.1f ms   p99 %.1f ms   max %.1f ms\n",
              percentile(all, 0.5), percentile(all, 0.99), percentile(all, 1.0));
  if (committed_s > 0)
    std::printf("  all committed     %.2f s   %.0f events/s end to end\n", committed_s,
                static_cast<double>(total) / committed_s);
  else
    std::printf("  not all committed within 300 s\n");

  // Results: keyed lookups, then a full scan page by page.
  std::vector<double> lookup_ms;
  httplib::Client q{"127.0.0.1", port};
  for (int i = 0; i < lookups; ++i) {
    const auto t = clock_type::now();
    auto r = q.Get(("/v1/pipelines/bench/results?format=csv&key=k" + std::to_string(rng() % keys))
                     .c_str());
    if (r && r->status == 200)
      lookup_ms.push_back(seconds_since(t) * 1e3);
  }
  size_t rows = 0;
  std::string after;
  const auto scan = clock_type::now();
  for (;;) {
    auto r = q.Get(("/v1/pipelines/bench/results?format=csv&limit=100000" +
                    (after.empty() ? "" : "&after=" + after))
                     .c_str());
    if (!r || r->status != 200)
      break;
    rows += static_cast<size_t>(std::count(r->body.begin(), r->body.end(), '\n')) - 1;
    if (!r->has_header("Weir-Next-Cursor"))
      break;
    after = r->get_header_value("Weir-Next-Cursor");
  }
  const double scan_s = seconds_since(scan);
  std::printf("results: %zu windows\n", rows);
  std::printf("  keyed lookup      p50 %.2f ms   p99 %.2f ms   (%zu lookups, one key's windows "
              "each)\n",
              percentile(lookup_ms, 0.5), percentile(lookup_ms, 0.99), lookup_ms.size());
  std::printf("  full scan         %.3f s   %.0f rows/s\n", scan_s,
              static_cast<double>(rows) / scan_s);
  ::kill(pid, SIGTERM);
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (temp)
    fs::remove_all(dir);
  return refused.load() == 0 && committed_s > 0 ? 0 : 1;
}
