// `strata/browser`: the library for a web page (navigator.gpu; model files from URLs with range requests, or files
// the user picked). A model location given as a string is a URL here. Node-only parts (NodeFileSource, files on
// disk) refuse with a StrataUserError when called.
export * from './index.ts';
export { sourceFor } from './base/defaultSource.browser.ts';
