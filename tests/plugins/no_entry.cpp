// A shared object that is not a Weir plugin (it defines no WEIR_PLUGIN), for
// tests/core_extension_test.cpp.
extern "C" int not_a_weir_plugin() { return 1; }
