/* Differential-test oracle: systemd's own unit-file tokenizer.
 *
 * Calls config_parse() from libsystemd-shared-252.so (the function the unit loader uses,
 * in unit-loader mode: flags 0, so no "RELAXED") on each file named on the command line
 * and prints, one line per file, what it delivers: a JSON array of [section, key, value]
 * triples in file order, or {"error": "..."} when config_parse() fails the file.
 * Assignments before the first section header are dropped, as the unit loader does.
 *
 * Build: cc -o oracle config_parse_oracle.c -L/usr/lib/x86_64-linux-gnu/systemd \
 *        -l:libsystemd-shared-252.so -Wl,-rpath,/usr/lib/x86_64-linux-gnu/systemd
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int (*ConfigParserCallback)(const char *unit, const char *filename, unsigned line,
                                    const char *section, unsigned section_line,
                                    const char *lvalue, int ltype, const char *rvalue,
                                    void *data, void *userdata);
typedef int (*ConfigItemLookup)(const void *table, const char *section, const char *lvalue,
                                ConfigParserCallback *ret_func, int *ret_ltype,
                                void **ret_data, void *userdata);
int config_parse(const char *unit, const char *filename, FILE *f, const char *sections,
                 ConfigItemLookup lookup, const void *table, int flags, void *userdata,
                 struct stat *ret_stat);
void log_set_max_level(int level);

static char *out;
static size_t out_len, out_cap;
static int first;

static void put(const char *s, size_t n) {
    if (out_len + n + 1 > out_cap) {
        out_cap = (out_len + n + 1) * 2;
        out = realloc(out, out_cap);
        if (!out) abort();
    }
    memcpy(out + out_len, s, n);
    out_len += n;
    out[out_len] = 0;
}

static void put_json(const char *s) {
    put("\"", 1);
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        char buf[8];
        if (*p == '"' || *p == '\\') {
            buf[0] = '\\';
            buf[1] = (char) *p;
            put(buf, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(buf, sizeof buf, "\\u%04x", *p);
            put(buf, 6);
        } else
            put((const char *) p, 1);
    }
    put("\"", 1);
}

static int record(const char *unit, const char *filename, unsigned line, const char *section,
                  unsigned section_line, const char *lvalue, int ltype, const char *rvalue,
                  void *data, void *userdata) {
    if (!section) return 0;
    put(first ? "[" : ",[", first ? 1 : 2);
    first = 0;
    put_json(section);
    put(",", 1);
    put_json(lvalue);
    put(",", 1);
    put_json(rvalue);
    put("]", 1);
    return 0;
}

static int lookup(const void *table, const char *section, const char *lvalue,
                  ConfigParserCallback *ret_func, int *ret_ltype, void **ret_data,
                  void *userdata) {
    *ret_func = record;
    *ret_ltype = 0;
    *ret_data = NULL;
    return 1;
}

int main(int argc, char **argv) {
    log_set_max_level(0);
    for (int i = 1; i < argc; i++) {
        out_len = 0;
        first = 1;
        put("[", 1);
        int r = config_parse(NULL, argv[i], NULL, NULL, lookup, NULL, 0, NULL, NULL);
        if (r < 0)
            printf("{\"error\": \"%s\"}\n", strerror(-r));
        else
            printf("%s]\n", out);
    }
    return 0;
}
