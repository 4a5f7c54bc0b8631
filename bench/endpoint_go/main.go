// The instant `_bulk` endpoint of bench/endpoint.py in Go, for measurements where the
// endpoint must take as little of the machine's CPU as it can (bench/workers.py: two
// shipper workers and the endpoint share two cores). It answers what Elasticsearch 8/9
// answers to shipper: every `create` item 201, cut down by the request's `filter_path`
// when that keeps only `errors` and `items.*.<fields>` (shipper's), else in full; the
// version at `/`, 404 for a template lookup, `{"acknowledged":true}` for anything else.
// Bodies are counted (documents = newlines / 2), never parsed. Its stats say, as the
// Python one's do, when the first and the last `_bulk` request were answered. It runs on
// one OS thread (GOMAXPROCS 1): with more, the Go scheduler's idle threads spin looking
// for work, and on a machine whose cores are all busy that spinning is CPU taken from
// what is measured (1.99 CPU s against 1.17 for the same 2.45M documents).
//
//	go build -o endpoint . && ./endpoint -port 9299
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"
)

type stats struct {
	mu        sync.Mutex
	documents int64
	requests  int64
	bytes     int64
	first     float64 // Unix seconds; 0: none yet
	last      float64
}

func unix() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func orNull(t float64) any {
	if t == 0 {
		return nil
	}
	return t
}

var fullItem = `{"create":{"_index":"%s","_id":"bench-document-id-01","_version":1,` +
	`"result":"created","_shards":{"total":2,"successful":1,"failed":0},` +
	`"_seq_no":1000,"_primary_term":1,"status":201}}`

// item is one answer item: only `status` when filter_path keeps `items.*.status` (the
// other fields shipper asks for are absent from a created item), else the full item.
func item(index, filterPath string) (string, bool) {
	if filterPath == "" {
		return fmt.Sprintf(fullItem, index), true
	}
	keepsStatus := false
	for _, p := range strings.Split(filterPath, ",") {
		if p == "items.*.status" || p == "items" || p == "items.*" {
			keepsStatus = true
		}
	}
	if !keepsStatus {
		return "", false
	}
	return `{"create":{"status":201}}`, true
}

// A read buffer per request in flight, reused: a fresh 1 MiB for each of a thousand
// requests was a gigabyte for the garbage collector.
var buffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func counted(r io.Reader) (int64, int64, error) {
	pooled := buffers.Get().(*[]byte)
	defer buffers.Put(pooled)
	buf := *pooled
	var size, lines int64
	for {
		n, err := r.Read(buf)
		size += int64(n)
		lines += int64(bytes.Count(buf[:n], []byte{'\n'}))
		if err == io.EOF {
			return size, lines, nil
		}
		if err != nil {
			return size, lines, err
		}
	}
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 9299, "port to listen on")
	flag.Parse()
	runtime.GOMAXPROCS(1)
	st := &stats{}
	reply := func(w http.ResponseWriter, status int, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.WriteHeader(status)
		w.Write(body)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		switch {
		case path == "/_bench/stats":
			st.mu.Lock()
			body, _ := json.Marshal(map[string]any{
				"documents": st.documents, "requests": st.requests, "bytes": st.bytes,
				"delays": []float64{}, "sample": nil,
				"first_at": orNull(st.first), "last_at": orNull(st.last),
			})
			st.mu.Unlock()
			reply(w, 200, body)
			return
		case path == "/_bench/reset":
			st.mu.Lock()
			st.documents, st.requests, st.bytes = 0, 0, 0
			st.first, st.last = 0, 0
			st.mu.Unlock()
			reply(w, 200, []byte("{}"))
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				reply(w, 400, []byte(`{"error":"bad gzip","status":400}`))
				return
			}
			body = gz
		}
		size, lines, err := counted(body)
		if err != nil {
			return
		}
		switch {
		case strings.HasSuffix(path, "/_bulk"):
			items := lines / 2
			st.mu.Lock()
			st.requests++
			st.bytes += size
			st.documents += items
			st.last = unix()
			if st.first == 0 {
				st.first = st.last
			}
			st.mu.Unlock()
			index := strings.TrimPrefix(strings.TrimSuffix(path, "/_bulk"), "/")
			one, keep := item(index, r.URL.Query().Get("filter_path"))
			var out bytes.Buffer
			out.WriteString(`{"errors":false`)
			if r.URL.Query().Get("filter_path") == "" {
				out.WriteString(`,"took":3`)
			}
			if keep {
				out.WriteString(`,"items":[`)
				for i := int64(0); i < items; i++ {
					if i > 0 {
						out.WriteByte(',')
					}
					out.WriteString(one)
				}
				out.WriteByte(']')
			}
			out.WriteByte('}')
			reply(w, 200, out.Bytes())
		case strings.HasPrefix(path, "/_index_template/") && r.Method == "GET":
			reply(w, 404, []byte(`{"error":"not found","status":404}`))
		case path == "/":
			reply(w, 200, []byte(`{"name":"bench","version":{"number":"9.5.3"},"tagline":"You Know, for Search"}`))
		default:
			reply(w, 200, []byte(`{"acknowledged":true}`))
		}
	})
	log.Fatal(http.ListenAndServe(fmt.Sprintf("%s:%d", *host, *port), nil))
}
