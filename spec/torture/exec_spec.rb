# frozen_string_literal: true

require_relative "torture_helper"

# Scenario 3: non-Ruby programs under the preload print and exit exactly as
# without it; exit statuses and deaths by signal pass through exe/mwrap.
RSpec.describe "torture: exec into non-Ruby programs" do
  before { require_preload! }

  # Runs argv without and with the preload (LD_PRELOAD and exe/mwrap) and
  # expects the same stdout and exit status; returns the three results.
  def same_with_and_without(*argv, stdin_data: "")
    plain = TortureHelpers.run_timed({}, *argv, timeout: 60, stdin_data: stdin_data)
    preloaded = TortureHelpers.run_timed({ "LD_PRELOAD" => built_preload }, *argv, timeout: 60,
                                                                                 stdin_data: stdin_data)
    wrapped = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, *argv, timeout: 60,
                                                                                        stdin_data: stdin_data)
    [preloaded, wrapped].each do |r|
      expect(r.timed_out).to be(false), "#{argv.inspect} hung under the preload"
      expect(r.stdout).to eq(plain.stdout), "#{argv.inspect}: stdout differs under the preload"
      expect([r.status.exitstatus, r.status.termsig]).to eq([plain.status.exitstatus, plain.status.termsig]),
                                                         "#{argv.inspect}: #{plain.describe}\nvs\n#{r.describe}"
    end
    TortureHelpers.note("exec", "argv" => argv.first(3).join(" "), "exitstatus" => plain.status.exitstatus,
                                "termsig" => plain.status.termsig, "same" => true)
    [plain, preloaded, wrapped]
  end

  it "runs sh (builtins, pipes, subshells, a loop that forks) unchanged" do
    script = 'for i in 1 2 3 4 5; do echo "line $i" | tr a-z A-Z; done; (echo sub; exit 3); echo "rc=$?"; ' \
             'x=$(printf "%s" abc | wc -c); echo "wc=$x"; exit 7'
    plain, = same_with_and_without("sh", "-c", script)
    expect(plain.stdout).to include("LINE 5", "rc=3", "wc=3")
    expect(plain.exitstatus).to eq(7)
  end

  it "runs perl unchanged (hashes, regexps, sort, sprintf)" do
    skip "perl not installed" unless which("perl")
    code = 'my %h; $h{$_ % 97} .= "x" x ($_ % 13) for 1..20000; my @k = sort { $a <=> $b } keys %h; ' \
           'my $s = join ",", map { sprintf "%d:%d", $_, length $h{$_} } @k; $s =~ s/(\d+):/<$1>/g; ' \
           'print length($s), " ", substr($s, 0, 40), "\n"; exit 5'
    plain, = same_with_and_without("perl", "-e", code)
    expect(plain.exitstatus).to eq(5)
  end

  it "runs python3 unchanged" do
    py = which("python3")
    skip "python3 not installed" unless py
    code = "import json, hashlib, sys\nd = {str(i): [i] * (i % 17) for i in range(20000)}\n" \
           "s = json.dumps(d, sort_keys=True)\nprint(len(s), hashlib.sha256(s.encode()).hexdigest())\nsys.exit(3)"
    plain, = same_with_and_without(py, "-c", code)
    expect(plain.exitstatus).to eq(3)
  end

  it "runs git --version, cmake --version and ls unchanged" do
    ran = []
    if which("git")
      same_with_and_without("git", "--version")
      ran << "git"
    end
    if which("cmake")
      same_with_and_without("cmake", "--version")
      ran << "cmake"
    else
      warn "torture: cmake not installed, skipping cmake --version"
    end
    plain, = same_with_and_without("ls", "-la", "--time-style=+", TortureHelpers::NATIVE)
    expect(plain.stdout).to include("alloc_contract.c")
    same_with_and_without("ls", "/nonexistent-mwrap-torture")
    ran << "ls"
    expect(ran).to include("ls")
  end

  it "runs a statically linked binary unchanged (the preload is simply not loaded)" do
    skip "no C compiler" unless TortureHelpers.cc?
    libc_a = Dir["/usr/lib/*/libc.a", "/usr/lib/libc.a", "/usr/lib64/libc.a"].first
    skip "no libc.a (libc6-dev) for gcc -static" unless libc_a
    hello = TortureHelpers.compile_c(<<~C, name: "hello_static", flags: ["-static"])
      #include <stdio.h>
      #include <stdlib.h>
      int main(int argc, char **argv) {
        char *p = malloc(100);
        snprintf(p, 100, "hello static %d", argc);
        puts(p);
        free(p);
        return argc == 2 ? atoi(argv[1]) : 0;
      }
    C
    plain, = same_with_and_without(hello, "9")
    expect(plain.stdout).to eq("hello static 2\n")
    expect(plain.exitstatus).to eq(9)
  end

  it "runs a C++ program (new/delete, containers, exceptions, threads) unchanged" do
    cxx = which(ENV.fetch("CXX", "g++"))
    skip "no C++ compiler (g++)" unless cxx
    bin = begin
      CBuildCache.build(<<~'CXX', name: "cxx_smoke", compiler: cxx, ext: "cc", cflags: %w[-std=c++17 -O1 -pthread])
        #include <cstdio>
        #include <map>
        #include <memory>
        #include <stdexcept>
        #include <string>
        #include <thread>
        #include <vector>
        int main() {
          std::map<std::string, std::vector<int>> m;
          for (int i = 0; i < 20000; i++) m[std::to_string(i % 997)].push_back(i);
          long sum = 0;
          for (auto &kv : m) sum += (long)kv.second.size() * (long)kv.first.size();
          int caught = 0;
          for (int i = 0; i < 1000; i++) {
            try { throw std::runtime_error(std::string(100 + i, 'e')); }
            catch (const std::exception &e) { caught += e.what()[0] == 'e'; }
          }
          std::vector<std::thread> ts;
          std::vector<long> out(4);
          for (int t = 0; t < 4; t++)
            ts.emplace_back([t, &out] {
              std::vector<std::unique_ptr<std::string>> v;
              for (int i = 0; i < 5000; i++) v.push_back(std::make_unique<std::string>(i % 300, 'x'));
              long n = 0;
              for (auto &p : v) n += (long)p->size();
              out[t] = n;
            });
          for (auto &t : ts) t.join();
          std::printf("%zu %ld %d %ld\n", m.size(), sum, caught, out[0] + out[1] + out[2] + out[3]);
          return 4;
        }
        CXX
    rescue CBuildCache::Error => e
      skip "g++ could not build the C++ smoke: #{e.message}"
    end
    plain, = same_with_and_without(bin)
    expect(plain.exitstatus).to eq(4)
    expect(plain.stdout).to match(/\A997 \d+ 1000 \d+\n\z/)
  end

  it "reads stdin unchanged (sort, cat -n, wc)" do
    input = Array.new(5000) { |i| "#{(i * 7919) % 5003} item #{i}" }.join("\n") << "\n"
    same_with_and_without("sort", "-n", stdin_data: input)
    same_with_and_without("sh", "-c", "cat -n | wc -l", stdin_data: input)
  end

  describe "exit statuses and signals through exe/mwrap" do
    # 0, 1 and 42 from sh are in spec/exe_mwrap_spec.rb; these add Ruby and
    # perl, high statuses, and deaths by signal.
    it "passes exit statuses of Ruby, perl and sh through (0, 1, 42, 255)" do
      [0, 1, 42, 255].each do |code|
        r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, RbConfig.ruby, "-e", "exit #{code}",
                                     timeout: 60)
        expect(r.exitstatus).to eq(code), r.describe
        r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, "perl", "-e", "exit #{code}",
                                     timeout: 60)
        expect(r.exitstatus).to eq(code), r.describe
      end
      r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, RbConfig.ruby, "-e", "abort 'bye'",
                                   timeout: 60)
      expect([r.exitstatus, r.stderr]).to eq([1, "bye\n"])
    end

    %w[TERM KILL INT HUP SEGV ABRT USR1].each do |sig|
      it "passes a death by SIG#{sig} through (termsig)" do
        # perl restores the default action first: a signal ignored by
        # whoever started rspec (HUP under nohup) stays ignored across exec.
        reset = 'local $SIG{$ARGV[0]} = "DEFAULT" unless $ARGV[0] eq "KILL"; exec "sh", "-c", "kill -$ARGV[0] \\$\\$"'
        r = TortureHelpers.run_timed({}, RbConfig.ruby, MwrapSpecHelpers::EXE, "perl", "-e", reset, sig,
                                     timeout: 60)
        expect(r.status.signaled?).to be(true), r.describe
        expect(r.termsig).to eq(Signal.list.fetch(sig))
      end
    end

    it "passes a Ruby program killing itself by signal through" do
      # Ruby handles a signal it sends itself inside Process.kill; the
      # sleep only keeps the program from exiting 0 if it did not.
      r = TortureHelpers.run_timed({ "MWRAP" => "dump_fd:2" }, RbConfig.ruby, MwrapSpecHelpers::EXE, RbConfig.ruby,
                                   "-e", 'x = "a" * 100_000; Process.kill(:TERM, $$); sleep 5', timeout: 60)
      expect(r.termsig).to eq(Signal.list.fetch("TERM")), r.describe
      # A process killed by a signal writes no dump.
      expect(r.stderr).to eq("")
    end
  end
end
