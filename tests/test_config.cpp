// Unit tests: configuration values; bad ones are rejected by cdsm_init() with the
// setting's name in the message, before MPI is touched.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <unistd.h>

#include <cdsm.h>

#include "config.h"
#include "inject.h"

namespace {

struct Bad {
    const char *name, *value, *why;
};

void clear_env()
{
    for (;;) {
        bool removed = false;
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, "CDSM_", 5)) {
                std::string n(*e, strchr(*e, '=') - *e);
                unsetenv(n.c_str());
                removed = true;
                break;
            }
        if (!removed) return;
    }
}

} // namespace

TEST(Config, DefaultsParse)
{
    clear_env();
    cdsm__config_t c;
    ASSERT_EQ(cdsm__config_load(&c), CDSM_OK);
    EXPECT_EQ(c.heap_size, 64ull << 30);
    EXPECT_EQ(c.page_size, 4096u);
    EXPECT_EQ(c.locks, 65536u);
    EXPECT_EQ(c.log_level, 1u); // warn
}

TEST(Config, ValuesParse)
{
    clear_env();
    setenv("CDSM_HEAP_SIZE", "512M", 1);
    setenv("CDSM_PAGE_SIZE", "16384", 1);
    setenv("CDSM_GC_BOUND", "64K", 1);
    setenv("CDSM_LOG_LEVEL", "debug", 1);
    setenv("CDSM_CHECK", "yes", 1);
    cdsm__config_t c;
    ASSERT_EQ(cdsm__config_load(&c), CDSM_OK);
    EXPECT_EQ(c.heap_size, 512ull << 20);
    EXPECT_EQ(c.page_size, 16384u);
    EXPECT_EQ(c.gc_bound, 64u << 10);
    EXPECT_EQ(c.log_level, 3u);
    EXPECT_EQ(c.check, 1u);
    clear_env();
}

TEST(Config, BadValuesRejectedWithTheirName)
{
    const Bad bad[] = {
        {"CDSM_PAGE_SIZE", "5000", "multiple"},    {"CDSM_PAGE_SIZE", "4k4", "valid"},
        {"CDSM_HEAP_SIZE", "lots", "valid"},       {"CDSM_HEAP_SIZE", "-5", "valid"},
        {"CDSM_HEAP_SIZE", "1K", "range"},         {"CDSM_LOCKS", "0", "range"},
        {"CDSM_LOCKS", "12x", "valid"},            {"CDSM_GC_BOUND", "", "valid"},
        {"CDSM_LOG_LEVEL", "loud", "one of"},      {"CDSM_STATS", "7", "range"},
        {"CDSM_CHECK", "maybe", "boolean"},        {"CDSM_HEAP_ADDR", "0x1234", "range"},
        {"CDSM_HEAP_ADDR", "0x200000001000", "aligned"}, {"CDSM_NO_SUCH_SETTING", "1", "unknown"},
        {"CDSM_WHOLE_PAGE_NOTICES", "99999999999", "range"},
    };
    for (const Bad &b : bad) {
        clear_env();
        setenv(b.name, b.value, 1);
        int rc = cdsm_init(nullptr, nullptr);
        EXPECT_EQ(rc, CDSM_ERR_CONFIG) << b.name << "=" << b.value;
        std::string msg = cdsm_last_error();
        EXPECT_NE(msg.find(b.name), std::string::npos) << msg;
        EXPECT_NE(msg.find(b.why), std::string::npos) << msg;
        EXPECT_EQ(cdsm_rank(), -1); // nothing was initialised
    }
    clear_env();
}

TEST(Config, FileIsReadAndCheckedLineByLine)
{
    clear_env();
    char path[] = "/tmp/cdsm-config-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# comment\nCDSM_LOCKS = 77\n\nCDSM_PAGE_SIZE=8192 # trailing\n");
    fclose(f);
    setenv("CDSM_CONFIG_FILE", path, 1);
    cdsm__config_t c;
    ASSERT_EQ(cdsm__config_load(&c), CDSM_OK);
    EXPECT_EQ(c.locks, 77u);
    EXPECT_EQ(c.page_size, 8192u);
    // The environment wins over the file.
    setenv("CDSM_LOCKS", "78", 1);
    ASSERT_EQ(cdsm__config_load(&c), CDSM_OK);
    EXPECT_EQ(c.locks, 78u);
    unsetenv("CDSM_LOCKS");

    f = fopen(path, "w");
    fprintf(f, "CDSM_LOCKS=5\nthis is not a setting\n");
    fclose(f);
    EXPECT_EQ(cdsm_init(nullptr, nullptr), CDSM_ERR_CONFIG);
    EXPECT_NE(std::string(cdsm_last_error()).find(":2:"), std::string::npos) << cdsm_last_error();

    f = fopen(path, "w");
    fprintf(f, "CDSM_TYPO=5\n");
    fclose(f);
    EXPECT_EQ(cdsm_init(nullptr, nullptr), CDSM_ERR_CONFIG);
    EXPECT_NE(std::string(cdsm_last_error()).find("CDSM_TYPO"), std::string::npos);

    unlink(path);
    EXPECT_EQ(cdsm_init(nullptr, nullptr), CDSM_ERR_CONFIG);
    EXPECT_NE(std::string(cdsm_last_error()).find("CDSM_CONFIG_FILE"), std::string::npos);
    clear_env();
}

TEST(Config, RecoverySettings)
{
    clear_env();
    cdsm__config_t c;
    ASSERT_EQ(cdsm__config_load(&c), CDSM_OK);
    EXPECT_EQ(c.logging, 1u);
    EXPECT_STREQ(c.ckpt_dir, "");
    EXPECT_EQ(c.ckpt_log_size, 64ull << 20);
    setenv("CDSM_LOGGING", "off", 1);
    setenv("CDSM_CKPT_DIR", "/scratch/run 1", 1);
    setenv("CDSM_CKPT_BARRIERS", "5", 1);
    setenv("CDSM_CKPT_FULL_EVERY", "1", 1);
    ASSERT_EQ(cdsm__config_load(&c), CDSM_OK);
    EXPECT_EQ(c.logging, 0u);
    EXPECT_STREQ(c.ckpt_dir, "/scratch/run 1");
    EXPECT_EQ(c.ckpt_barriers, 5u);
    EXPECT_EQ(c.ckpt_full_every, 1u);
    // A path too long for the setting is refused, never truncated.
    std::string longdir(CDSM_CFG_PATH_MAX, 'd');
    setenv("CDSM_CKPT_DIR", longdir.c_str(), 1);
    EXPECT_EQ(cdsm__config_load(&c), CDSM_ERR_CONFIG);
    EXPECT_NE(std::string(cdsm_last_error()).find("CDSM_CKPT_DIR"), std::string::npos);
    EXPECT_NE(std::string(cdsm_last_error()).find("too long"), std::string::npos);
    setenv("CDSM_CKPT_DIR", "", 1);
    setenv("CDSM_CKPT_FULL_EVERY", "0", 1);
    EXPECT_EQ(cdsm__config_load(&c), CDSM_ERR_CONFIG);
    EXPECT_NE(std::string(cdsm_last_error()).find("CDSM_CKPT_FULL_EVERY=0"), std::string::npos);
    setenv("CDSM_CKPT_FULL_EVERY", "2", 1);
    setenv("CDSM_LOGGING", "sometimes", 1);
    EXPECT_EQ(cdsm__config_load(&c), CDSM_ERR_CONFIG);
    EXPECT_NE(std::string(cdsm_last_error()).find("CDSM_LOGGING=sometimes"), std::string::npos);
    clear_env();
}

TEST(Config, EverySettingIsDocumented)
{
    std::ifstream doc(CDSM_SOURCE_ROOT "/docs/CONFIG.md");
    ASSERT_TRUE(doc.good()) << "docs/CONFIG.md missing";
    std::stringstream ss;
    ss << doc.rdbuf();
    std::string text = ss.str();
    size_t count = 0;
    for (size_t t = 0; t < cdsm__cfg_ntables; t++)
        for (size_t i = 0; i < cdsm__cfg_tables[t].count; i++) {
            const cdsm__cfg_entry_t &e = cdsm__cfg_tables[t].entries[i];
            EXPECT_NE(text.find(std::string("`") + e.name + "`"), std::string::npos) << e.name;
            EXPECT_NE(text.find(e.def), std::string::npos) << e.name << " default " << e.def;
            count++;
        }
    EXPECT_GE(count, 9u);
}

TEST(Config, FaultInjectionValuesAreCheckedByName)
{
    cdsm__config_t saved = cdsm__cfg;
    const char *bad[] = {"1", "1:ckpt_write", "x:ckpt_write:1", "1:ckpt_write:0", "1:ckpt_nowhere:2", "1:ckpt_write:2x"};
    for (const char *v : bad) {
        snprintf(cdsm__cfg.kill_at, sizeof cdsm__cfg.kill_at, "%s", v);
        EXPECT_EQ(cdsm__inject_init(), CDSM_ERR_CONFIG) << v;
        EXPECT_NE(std::string(cdsm_last_error()).find(std::string("CDSM_KILL_AT=") + v), std::string::npos) << v;
    }
    snprintf(cdsm__cfg.kill_at, sizeof cdsm__cfg.kill_at, "%s", "2:ckpt_rename:3");
    EXPECT_EQ(cdsm__inject_init(), CDSM_OK);
    cdsm__inject_arm(1); // another rank: never armed, so this returns
    cdsm__inject(2, "ckpt_rename");
    cdsm__cfg = saved;
    EXPECT_EQ(cdsm__inject_init(), CDSM_OK);
}

TEST(Status, NamesAndStringsComeFromOneTable)
{
    EXPECT_STREQ(cdsm_status_name(CDSM_OK), "CDSM_OK");
    EXPECT_STREQ(cdsm_status_name(CDSM_ERR_CONFIG), "CDSM_ERR_CONFIG");
    EXPECT_STREQ(cdsm_strerror(CDSM_ERR_NO_SPACE), "shared heap arena exhausted");
    EXPECT_STREQ(cdsm_status_name(12345), "CDSM_UNKNOWN_STATUS");
    EXPECT_STREQ(cdsm_strerror(-999), "unknown status code");
}

TEST(Api, CallsBeforeInitFailCleanly)
{
    void *p = nullptr;
    EXPECT_EQ(cdsm_alloc(64, &p), CDSM_ERR_STATE);
    EXPECT_EQ(cdsm_lock_acquire(0), CDSM_ERR_STATE);
    EXPECT_EQ(cdsm_barrier(), CDSM_ERR_STATE);
    EXPECT_EQ(cdsm_finalize(), CDSM_ERR_STATE);
    cdsm_stats_t s;
    EXPECT_EQ(cdsm_stats_get(&s), CDSM_ERR_STATE);
    EXPECT_EQ(cdsm_rank(), -1);
    EXPECT_EQ(cdsm_nranks(), -1);
}

TEST(Config, ValueTextNamesAnEnumerationsChoice)
{
    char b[32];
    EXPECT_STREQ(cdsm__config_value_text("CDSM_NODE_HEAP", 0, b, sizeof b), "auto");
    EXPECT_STREQ(cdsm__config_value_text("CDSM_NODE_HEAP", 2, b, sizeof b), "0");
    EXPECT_STREQ(cdsm__config_value_text("CDSM_TRANSPORT", 2, b, sizeof b), "socket");
    EXPECT_STREQ(cdsm__config_value_text("CDSM_LOCKS", 65536, b, sizeof b), "65536");
}
