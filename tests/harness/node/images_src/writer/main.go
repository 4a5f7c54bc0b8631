// Command writer is the node tests' workload: it writes numbered, self-describing lines
// to stdout at a fixed rate, so a test can tell which lines are missing or doubled.
//
// Line i (from 0) is "<pod> <i, 8 digits> <body>", where the body is determined by i:
//   - i%1000 == 999: a long line of 40,000 bytes (the runtime splits it P,P,F);
//   - with -traces, i%100 == 50: a Java stack trace of 6 lines (one event for a
//     shipper.io/multiline: java pod; its continuation lines carry no number);
//   - otherwise: a short line of 60-109 bytes.
//
// After -lines lines (0: no limit), or on SIGTERM, it writes "<pod> <i> END <i>" (the
// number of numbered lines before it) and, after SIGTERM exits, else sleeps until killed.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func body(i int, traces bool) string {
	switch {
	case i%1000 == 999:
		return "L" + strings.Repeat(string(rune('a'+i%26)), 39_999-1)
	case traces && i%100 == 50:
		var b strings.Builder
		fmt.Fprintf(&b, "java.lang.IllegalStateException: boom %d", i)
		for k := 0; k < 4; k++ {
			fmt.Fprintf(&b, "\n\tat com.example.Worker.step%d(Worker.java:%d)", k, 10+k)
		}
		b.WriteString("\n\t... 3 more")
		return b.String()
	default:
		return "short " + strings.Repeat("x", 50+i%50)
	}
}

func main() {
	pod := flag.String("pod", os.Getenv("POD_NAME"), "name written at the start of each line")
	rate := flag.Int("rate", 2000, "lines per second")
	lines := flag.Int("lines", 0, "numbered lines to write (0: until SIGTERM)")
	traces := flag.Bool("traces", false, "every 100th line is a Java stack trace")
	flag.Parse()
	if *pod == "" {
		*pod, _ = os.Hostname()
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	const tick = 10 * time.Millisecond
	perTick := *rate / 100
	if perTick < 1 {
		perTick = 1
	}
	ticker := time.NewTicker(tick)
	i := 0
	finish := func() {
		fmt.Fprintf(out, "%s %08d END %d\n", *pod, i, i)
		out.Flush()
	}
	for *lines == 0 || i < *lines {
		select {
		case <-term:
			finish()
			os.Exit(0)
		case <-ticker.C:
		}
		for n := 0; n < perTick && (*lines == 0 || i < *lines); n++ {
			fmt.Fprintf(out, "%s %08d %s\n", *pod, i, body(i, *traces))
			i++
			// One write per long line, so the runtime sees it whole and splits it itself.
			if out.Buffered() > 1<<15 {
				out.Flush()
			}
		}
		out.Flush()
	}
	finish()
	<-term
	os.Exit(0)
}
